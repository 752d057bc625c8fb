"""The serial engine's per-token program and memory map, compiled from a
:class:`~hardwire.gen.serial_image.SerialImage`."""

__all__ = ["EMB", "NORM", "MV", "ROPE", "KVST", "ATTN", "RESID", "SWIGLU", "HEAD", "ram_map",
           "program", "bit_width"]


# Op kinds of the per-token program.
EMB, NORM, MV, ROPE, KVST, ATTN, RESID, SWIGLU, HEAD = range(9)


def ram_map(image):
    """Word addresses of the activation RAM's vectors, and its depth."""
    sizes = {"x": image.dim, "xn": image.dim, "q": image.n_heads * image.head_dim,
             "k": image.n_kv_heads * image.head_dim, "v": image.n_kv_heads * image.head_dim,
             "att": image.n_heads * image.head_dim, "y": image.dim, "gate": image.ffn_dim,
             "up": image.ffn_dim, "hid": image.ffn_dim, "pr": image.context}
    out, base = {}, 0
    for name, size in sizes.items():
        out[name] = base
        base += size
    return out, base


def program(image, ram):
    """The per-token op list: embedding, each layer's 16 ops, final norm, head. Every op is a
    dict of the constants its states read."""
    kvd = image.n_kv_heads * image.head_dim

    def mv(slot, src, dst, kind=MV):
        return {"kind": kind, "src": ram[src], "dst": ram[dst], "w_base": slot.w_base,
                "rows": slot.rows, "groups": slot.groups or 0, "grouped": slot.groups is not None,
                "n_in": slot.n_in, "n": slot.n_out, "gsize": slot.group_size,
                "out16": slot.out_bits == 16}

    def norm(slot):
        return {"kind": NORM, "src": ram["x"], "dst": ram["xn"], "gains": slot.gains,
                "nshift": slot.shift, "eps": slot.eps_int, "n": image.dim}

    ops = [dict(mv(image.embed, "x", "x", EMB), n=image.dim, dst=ram["x"])]
    for index, layer in enumerate(image.layers):
        kv_base = index * image.context * kvd
        ops += [
            norm(layer["attn_norm"]),
            mv(layer["wq"], "xn", "q"), mv(layer["wk"], "xn", "k"), mv(layer["wv"], "xn", "v"),
            {"kind": ROPE, "src": ram["q"], "n": image.n_heads},
            {"kind": ROPE, "src": ram["k"], "n": image.n_kv_heads},
            {"kind": KVST, "kv_base": kv_base, "n": kvd},
            {"kind": ATTN, "kv_base": kv_base, "dst": ram["att"], "n": image.n_heads,
             "M": layer["M_att"], "s": layer["s_att"]},
            mv(layer["wo"], "att", "y"),
            {"kind": RESID, "n": image.dim},
            norm(layer["ffn_norm"]),
            mv(layer["w1"], "xn", "gate"), mv(layer["w3"], "xn", "up"),
            {"kind": SWIGLU, "dst": ram["hid"], "silu": layer["silu"], "M": layer["M_h"],
             "s": layer["s_h"], "n": image.ffn_dim},
            mv(layer["w2"], "hid", "y"),
            {"kind": RESID, "n": image.dim},
        ]
    ops += [norm(image.norm), mv(image.head, "xn", "xn", HEAD)]
    return ops


def bit_width(n):
    """Bits of a non-negative integer, at least 1."""
    return max(1, int(n).bit_length())
