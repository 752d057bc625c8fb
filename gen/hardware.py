"""``HardwareConfig`` and the translation of a ``QuantizedModel`` into plain unit parameters.

:mod:`hardwire.hdl` never imports numpy or :mod:`hardwire.gen`: :func:`decoder_params` turns every
constant a decoder needs into Python ``int``/``tuple``/``str`` values, one dict per unit, which
:class:`hardwire.hdl.decoder.Decoder` elaborates as they are.
"""

import operator
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["HardwareConfig", "decoder_params", "unit_lanes"]


def _positive(name, value, *, optional=False):
    if optional and value is None:
        return None
    what = "a positive integer or None" if optional else "a positive integer"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {what}, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be {what}, not {value!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be {what}, not {value!r}")
    return value


@dataclass(frozen=True)
class HardwareConfig:
    """How a decoder is built.

    ``lanes``: multiply–accumulates (or elements) per cycle of every unit, clipped per unit to
    what it can use (:func:`unit_lanes`); ``context``: KV cache depth, ``None`` for the
    quantized model's own ``context`` (it may be smaller, never larger: the RoPE tables stop
    there).

    Raises :class:`ConfigError` ("lanes must be a positive integer, not ...", "context must be a
    positive integer or None, not ...").
    """
    lanes: int
    context: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "lanes", _positive("lanes", self.lanes))
        object.__setattr__(self, "context", _positive("context", self.context, optional=True))


def unit_lanes(lanes, length, *, segment=None):
    """Lanes a unit of ``length`` elements gets from a requested ``lanes``: ``min(lanes,
    length)``; with ``segment`` (RoPE: pairs per head), at most ``segment`` or a multiple of it."""
    lanes = min(lanes, length)
    if segment is not None and lanes > segment:
        lanes -= lanes % segment
    return lanes


def _ints(array):
    return tuple(int(v) for v in array.reshape(-1))


def _rows(array):
    return tuple(tuple(int(v) for v in row) for row in array)


def _linear(name, qlins, lanes):
    """One matvec of the rows of ``qlins`` stacked (each row keeps its own ``M``/``shift``)."""
    first = qlins[0]
    for q in qlins[1:]:
        if (q.group_size, q.group_mult is None, q.out_bits, q.in_features) != \
                (first.group_size, first.group_mult is None, first.out_bits, first.in_features):
            raise ConfigError(f"{name}: the fused matrices differ in group size, output bits or "
                              f"input size and cannot share one matrix-vector unit")
    n_in = first.in_features
    params = {
        "weights": sum((_rows(q.values) for q in qlins), ()),
        "bits": max(q.bits for q in qlins),
        "group_size": first.group_size if first.group_mult is not None else None,
        "group_mult": (sum((_rows(q.group_mult) for q in qlins), ())
                       if first.group_mult is not None else None),
        "M": sum((_ints(q.M) for q in qlins), ()),
        "shift": sum((_ints(q.shift) for q in qlins), ()),
        "out_bits": first.out_bits,
        # A chunk never spans two groups: at most group_size lanes.
        "lanes": unit_lanes(lanes, n_in if first.group_mult is None else first.group_size),
    }
    return params


def _norm(q, lanes):
    return {"gain": _ints(q.gain), "shift": int(q.shift), "eps_int": int(q.eps_int),
            "lanes": unit_lanes(lanes, q.gain.size)}


def decoder_params(qm, config):
    """Plain-int parameters of a whole decoder for :class:`hardwire.hdl.decoder.Decoder`.

    Returns a dict: "vocab", "dim", "context", "eos_id", "rsqrt", "exp2", "rope_cos",
    "rope_sin" (``[context][head_dim/2]``), "embed", "layers" (a tuple of dicts: "attn_norm",
    "qkv" (wq|wk|wv rows fused, all 8-bit outputs), "rope" (``n_heads + n_kv_heads`` heads: q and
    k share the tables), "attention", "wo", "ffn_norm", "w13" (w1 rows then w3 rows), "swiglu",
    "w2"), "norm", "head" and "argmax". A matvec dict holds "weights", "bits", "group_size",
    "group_mult", "M", "shift", "out_bits", "lanes".

    Raises :class:`ConfigError` for a ``config.context`` beyond ``qm.context`` or matrices that
    cannot be fused.
    """
    if not isinstance(config, HardwareConfig):
        raise ConfigError(f"config must be a HardwareConfig, not {config!r}")
    spec, lanes = qm.spec, config.lanes
    context = qm.context if config.context is None else config.context
    if context > qm.context:
        raise ConfigError(f"context must be at most the quantized model's context "
                          f"{qm.context}, not {context}")
    half = spec.head_dim // 2
    layers = []
    for i, layer in enumerate(qm.layers):
        for k in ("wq", "wk", "wv", "w1", "w3"):
            if getattr(layer, k).out_bits != 8:
                raise ConfigError(f"layers.{i}.{k}: expected 8-bit outputs, found "
                                  f"{getattr(layer, k).out_bits}")
        rope_heads = spec.n_heads + spec.n_kv_heads
        layers.append({
            "attn_norm": _norm(layer.attn_norm, lanes),
            "qkv": _linear(f"layers.{i}.wq|wk|wv", (layer.wq, layer.wk, layer.wv), lanes),
            "rope": {"n_heads": rope_heads, "pairing": spec.rope_pairing,
                     "lanes": unit_lanes(lanes, rope_heads * half, segment=half)},
            "attention": {"n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads,
                          "head_dim": spec.head_dim, "M_att": int(layer.M_att),
                          "s_att": int(layer.s_att), "lanes": unit_lanes(lanes, spec.head_dim)},
            "wo": _linear(f"layers.{i}.wo", (layer.wo,), lanes),
            "residual": {"lanes": unit_lanes(lanes, spec.dim)},
            "ffn_norm": _norm(layer.ffn_norm, lanes),
            "w13": _linear(f"layers.{i}.w1|w3", (layer.w1, layer.w3), lanes),
            "swiglu": {"silu_table": _ints(layer.silu), "M": int(layer.M_h), "s": int(layer.s_h),
                       "lanes": unit_lanes(lanes, spec.ffn_dim)},
            "w2": _linear(f"layers.{i}.w2", (layer.w2,), lanes),
        })
    embed = qm.embed
    if embed.group_mult is not None:
        g = embed.group_size
        n_groups = embed.group_mult.shape[1]
        embed_lanes = unit_lanes(lanes, n_groups * g, segment=g)
    else:
        embed_lanes = unit_lanes(lanes, spec.dim)
    return {
        "vocab": spec.vocab_size,
        "dim": spec.dim,
        "context": context,
        "eos_id": spec.eos_id,
        "rsqrt": _ints(qm.rsqrt),
        "exp2": _ints(qm.exp2),
        "rope_cos": _rows(qm.rope_cos[:context]),
        "rope_sin": _rows(qm.rope_sin[:context]),
        "embed": {"table": _rows(embed.values), "M": _ints(embed.M), "s": _ints(embed.shift),
                  "group_mult": None if embed.group_mult is None else _rows(embed.group_mult),
                  "group_size": None if embed.group_mult is None else embed.group_size,
                  "lanes": embed_lanes},
        "layers": tuple(layers),
        "norm": _norm(qm.norm, lanes),
        "head": _linear("head", (qm.head,), lanes),
        "argmax": {"lanes": unit_lanes(lanes, spec.vocab_size)},
    }
