"""One decoder layer datapath, shared by every layer of the model: attention block and SwiGLU
block, each closed by its residual add, with the layer's constants picked by ``index``."""

import math

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .attention import Attention
from .matvec import MatVec
from .residual import ResidualAdd
from .rmsnorm import RMSNorm
from .rope import RoPE
from .swiglu import SwiGLU

__all__ = ["DecoderLayer", "requant_matvec", "stack_layers"]


def requant_matvec(params, banks=1):
    """A :class:`MatVec` with requantized whole-vector output from a
    :func:`hardwire.gen.hardware.decoder_params` matvec dict (``banks`` stacked matrices)."""
    kwargs = {}
    if params["group_mult"] is not None:
        kwargs.update(group_size=params["group_size"], group_mult=params["group_mult"])
    return MatVec(weights=params["weights"], lanes=params["lanes"], bits=params["bits"],
                  requant=(params["M"], params["shift"], params["out_bits"]), banks=banks,
                  **kwargs)


def _regrouped(mv, size):
    """``mv``'s group multipliers for groups of ``size`` inputs (which divides its own group
    size): each group's multiplier repeated over its parts, or all 1 for a matrix without
    groups. ``g * (a + b) == g * a + g * b``, so the row sums do not change."""
    n_in = len(mv["weights"][0])
    starts = range(0, n_in, size)
    if mv["group_mult"] is None:
        return tuple((1,) * len(starts) for _ in mv["weights"])
    own = mv["group_size"]
    return tuple(tuple(row[k // own] for k in starts) for row in mv["group_mult"])


def _stack_matvec(name, mats):
    """One matvec dict of ``mats`` stacked as banks. Layers whose scale groups differ (a GGUF may
    keep a projection as blocks in some layers only, or with other block sizes) share the
    greatest common group size, the others' multipliers repeated (:func:`_regrouped`)."""
    first = mats[0]
    if any(mv["out_bits"] != first["out_bits"] for mv in mats):
        raise ValueError(f"{name}: the layers differ in out_bits and cannot share one unit")
    sizes = {mv["group_size"] for mv in mats if mv["group_mult"] is not None}
    same = len({(mv["group_size"], mv["group_mult"] is None) for mv in mats}) == 1
    size = math.gcd(*sizes) if sizes else None
    lanes = min(mv["lanes"] for mv in mats)
    return {
        "weights": sum((mv["weights"] for mv in mats), ()),
        "bits": max(mv["bits"] for mv in mats),
        "group_size": size,
        "group_mult": None if size is None else sum(
            (mv["group_mult"] if same else _regrouped(mv, size) for mv in mats), ()),
        "M": sum((mv["M"] for mv in mats), ()),
        "shift": sum((mv["shift"] for mv in mats), ()),
        "out_bits": first["out_bits"],
        "lanes": lanes if size is None else min(lanes, size),
    }


def _stack_norm(norms):
    return {"gain": sum((n["gain"] for n in norms), ()),
            "shift": tuple(n["shift"] for n in norms),
            "eps_int": tuple(n["eps_int"] for n in norms),
            "lanes": norms[0]["lanes"]}


def stack_layers(layers):
    """The per-layer dicts of ``decoder_params(...)["layers"]`` as one dict of stacked banks
    (layer ``b`` is bank ``b`` of every unit): matrices' rows, gains and SILU tables
    concatenated, per-layer scalars as tuples. Units that carry no per-layer constant (RoPE,
    residual add) take the first layer's parameters."""
    first = layers[0]
    for key in ("rope", "residual"):
        if any(lp[key] != first[key] for lp in layers):
            raise ValueError(f"{key}: the layers differ and cannot share one unit")
    att = dict(first["attention"])
    att.update(M_att=tuple(lp["attention"]["M_att"] for lp in layers),
               s_att=tuple(lp["attention"]["s_att"] for lp in layers))
    return {
        "attn_norm": _stack_norm([lp["attn_norm"] for lp in layers]),
        "qkv": _stack_matvec("qkv", [lp["qkv"] for lp in layers]),
        "rope": first["rope"],
        "attention": att,
        "wo": _stack_matvec("wo", [lp["wo"] for lp in layers]),
        "residual": first["residual"],
        "ffn_norm": _stack_norm([lp["ffn_norm"] for lp in layers]),
        "w13": _stack_matvec("w13", [lp["w13"] for lp in layers]),
        "swiglu": {"silu_table": sum((lp["swiglu"]["silu_table"] for lp in layers), ()),
                   "M": tuple(lp["swiglu"]["M"] for lp in layers),
                   "s": tuple(lp["swiglu"]["s"] for lp in layers),
                   "lanes": first["swiglu"]["lanes"]},
        "w2": _stack_matvec("w2", [lp["w2"] for lp in layers]),
    }


def _link(m, src, dst, payload=None):
    # Pass-through glue: valid and payload from the producer, ready from the consumer, so the
    # producer's valid never depends on ready.
    m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                 dst.payload.eq(src.payload if payload is None else payload)]


class DecoderLayer(wiring.Component):
    """RMSNorm → QKV matvec → RoPE over [q|k] → Attention → wo → residual add → RMSNorm → W13
    matvec → SwiGLU → w2 → residual add, one token at a time, for any of the model's layers.

    One datapath serves all ``n_layers`` layers: every unit with per-layer constants holds them
    for all layers in stacked ROMs ("banks", :func:`stack_layers`) and the KV caches hold all
    layers' rows; ``index`` picks the bank. Only one token is ever in flight and the layers run
    one after another, so sharing costs no cycle and divides the logic by ``n_layers``.

    Parameters
    ----------
    layers : tuple of dict
        ``decoder_params(...)["layers"]``, one dict per layer.
    dim, context : int
    rsqrt, exp2 : tuple of int
        The shared RSQRT and EXP2 tables.
    rope_cos, rope_sin : tuple of tuple of int
        ``[context][head_dim/2]`` Q1.14 tables.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"x": ArrayLayout(signed(16), dim),
    "pos": unsigned(bit_length(context))})))``
        ``pos < context`` (the decoder guarantees it). Taken while no token is in the layer, or
        in the cycle the token in it leaves on ``o`` (so ``o`` can loop back to ``i`` with no
        bubble); ``x`` (the skip path) and ``pos`` are held in registers until the output
        leaves.
    o : ``Out(stream.Signature(<the same layout>))``
        The layer's residual output and the same ``pos``.
    index : ``In(range(n_layers))`` (only with ``n_layers > 1``)
        The layer the token in flight is in: held stable from the input transfer to the output
        transfer.

    Timing
    ------
    :meth:`cycles` ``(pos)``: clock edges from the input transfer to the output transfer with
    ``o`` always ready, the sum of the units' latencies (the glue adds no register), the same
    for every layer. ``i.ready`` depends combinationally on ``o.ready``.
    """

    def __init__(self, *, layers, dim, context, rsqrt, exp2, rope_cos, rope_sin):
        self._n_layers = n = len(layers)
        p = stack_layers(layers)
        self._dim, self._context = dim, context
        att = p["attention"]
        self._q_dim = att["n_heads"] * att["head_dim"]
        self._kv_dim = att["n_kv_heads"] * att["head_dim"]
        self._ffn = len(p["w2"]["weights"][0])

        def norm(q):
            return RMSNorm(rsqrt_table=rsqrt, banks=n, **q)

        self.norm1 = norm(p["attn_norm"])
        self.qkv = requant_matvec(p["qkv"], n)
        self.rope = RoPE(cos=rope_cos, sin=rope_sin, **p["rope"])
        self.attention = Attention(context=context, exp2_table=exp2, banks=n, **att)
        self.wo = requant_matvec(p["wo"], n)
        self.add1 = ResidualAdd(n=dim, **p["residual"])
        self.norm2 = norm(p["ffn_norm"])
        self.w13 = requant_matvec(p["w13"], n)
        self.swiglu = SwiGLU(n=self._ffn, banks=n, **p["swiglu"])
        self.w2 = requant_matvec(p["w2"], n)
        self.add2 = ResidualAdd(n=dim, **p["residual"])
        layout = data.StructLayout({"x": data.ArrayLayout(signed(16), dim),
                                    "pos": unsigned(context.bit_length())})
        members = {"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))}
        if n > 1:
            members["index"] = In(range(n))
        super().__init__(members)

    @property
    def n_layers(self):
        return self._n_layers

    BANKED = ("norm1", "qkv", "attention", "wo", "norm2", "w13", "swiglu", "w2")

    def cycles(self, pos):
        """Clock edges from the input transfer to the output transfer at position ``pos``."""
        return (self.norm1.latency + self.qkv.latency + self.rope.latency
                + self.attention.cycles(pos) + self.wo.latency + self.add1.latency
                + self.norm2.latency + self.w13.latency + self.swiglu.latency
                + self.w2.latency + self.add2.latency)

    def elaborate(self, platform):
        m = Module()
        for name in ("norm1", "qkv", "rope", "attention", "wo", "add1", "norm2", "w13", "swiglu",
                     "w2", "add2"):
            m.submodules[name] = getattr(self, name)
        if self._n_layers > 1:
            m.d.comb += [getattr(self, name).bank.eq(self.index) for name in self.BANKED]
        qd, kvd, ffn = self._q_dim, self._kv_dim, self._ffn

        busy = Signal()
        skip = Signal(data.ArrayLayout(signed(16), self._dim))
        pos = Signal(unsigned(self._context.bit_length()))
        v = Signal(data.ArrayLayout(signed(8), kvd))

        # Input: one token in flight; the skip path and pos wait in registers. The token in the
        # layer leaving frees it in the same cycle (norm1 has long been idle by then).
        leaving = Signal()
        m.d.comb += leaving.eq(self.o.valid & self.o.ready)
        free = ~busy | leaving
        m.d.comb += [self.norm1.i.valid.eq(self.i.valid & free),
                     self.i.ready.eq(self.norm1.i.ready & free),
                     self.norm1.i.payload.eq(self.i.payload.x)]
        with m.If(leaving):
            m.d.sync += busy.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [busy.eq(1), skip.eq(self.i.payload.x), pos.eq(self.i.payload.pos)]

        _link(m, self.norm1.o, self.qkv.i)
        # [q|k|v] → RoPE rotates [q|k]; v waits for the attention input.
        qkv = self.qkv.o.payload.as_value()
        rope_in = Signal(self.rope.i.payload.shape())
        m.d.comb += [rope_in.v.eq(qkv[:8 * (qd + kvd)]), rope_in.pos.eq(pos)]
        _link(m, self.qkv.o, self.rope.i, rope_in)
        with m.If(self.qkv.o.valid & self.qkv.o.ready):
            m.d.sync += v.eq(qkv[8 * (qd + kvd):])
        rot = self.rope.o.payload.as_value()
        att_in = Signal(self.attention.i.payload.shape())
        m.d.comb += [att_in.q.eq(rot[:8 * qd]), att_in.k.eq(rot[8 * qd:]), att_in.v.eq(v),
                     att_in.pos.eq(pos)]
        _link(m, self.rope.o, self.attention.i, att_in)
        _link(m, self.attention.o, self.wo.i)
        add1_in = Signal(self.add1.i.payload.shape())
        m.d.comb += [add1_in.x.eq(skip), add1_in.y.eq(self.wo.o.payload)]
        _link(m, self.wo.o, self.add1.i, add1_in)
        # The attention block's sum is both the FFN input and the FFN block's skip path.
        _link(m, self.add1.o, self.norm2.i)
        with m.If(self.add1.o.valid & self.add1.o.ready):
            m.d.sync += skip.eq(self.add1.o.payload)
        _link(m, self.norm2.o, self.w13.i)
        w13 = self.w13.o.payload.as_value()
        sw_in = Signal(self.swiglu.i.payload.shape())
        m.d.comb += [sw_in.gate.eq(w13[:8 * ffn]), sw_in.up.eq(w13[8 * ffn:])]
        _link(m, self.w13.o, self.swiglu.i, sw_in)
        _link(m, self.swiglu.o, self.w2.i)
        add2_in = Signal(self.add2.i.payload.shape())
        m.d.comb += [add2_in.x.eq(skip), add2_in.y.eq(self.w2.o.payload)]
        _link(m, self.w2.o, self.add2.i, add2_in)

        out = Signal(self.o.payload.shape())
        m.d.comb += [out.x.eq(self.add2.o.payload), out.pos.eq(pos)]
        _link(m, self.add2.o, self.o, out)
        return m
