"""One decoder layer: attention block and SwiGLU block, each closed by its residual add."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .attention import Attention
from .matvec import MatVec
from .residual import ResidualAdd
from .rmsnorm import RMSNorm
from .rope import RoPE
from .swiglu import SwiGLU

__all__ = ["DecoderLayer", "requant_matvec"]


def requant_matvec(params):
    """A :class:`MatVec` with requantized whole-vector output from a
    :func:`hardwire.gen.hardware.decoder_params` matvec dict."""
    kwargs = {}
    if params["group_mult"] is not None:
        kwargs.update(group_size=params["group_size"], group_mult=params["group_mult"])
    return MatVec(weights=params["weights"], lanes=params["lanes"], bits=params["bits"],
                  requant=(params["M"], params["shift"], params["out_bits"]), **kwargs)


def _link(m, src, dst, payload=None):
    # Pass-through glue: valid and payload from the producer, ready from the consumer, so the
    # producer's valid never depends on ready.
    m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                 dst.payload.eq(src.payload if payload is None else payload)]


class DecoderLayer(wiring.Component):
    """RMSNorm → QKV matvec → RoPE over [q|k] → Attention → wo → residual add → RMSNorm → W13
    matvec → SwiGLU → w2 → residual add, one token at a time.

    Parameters
    ----------
    params : dict
        One entry of ``decoder_params(...)["layers"]``.
    dim, context : int
    rsqrt, exp2 : tuple of int
        The shared RSQRT and EXP2 tables.
    rope_cos, rope_sin : tuple of tuple of int
        ``[context][head_dim/2]`` Q1.14 tables.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"x": ArrayLayout(signed(16), dim),
    "pos": unsigned(bit_length(context))})))``
        ``pos < context`` (the decoder guarantees it). Taken only while no token is in the layer;
        ``x`` (the skip path) and ``pos`` are held in registers until the output leaves.
    o : ``Out(stream.Signature(<the same layout>))``
        The layer's residual output and the same ``pos``.

    Timing
    ------
    :meth:`cycles` ``(pos)``: clock edges from the input transfer to the output transfer with
    ``o`` always ready, the sum of the units' latencies (the glue adds no register). The next
    token is accepted at the edge after the output transfer.
    """

    def __init__(self, *, params, dim, context, rsqrt, exp2, rope_cos, rope_sin):
        p = params
        self._dim, self._context = dim, context
        att = p["attention"]
        self._q_dim = att["n_heads"] * att["head_dim"]
        self._kv_dim = att["n_kv_heads"] * att["head_dim"]
        self._ffn = len(p["w2"]["weights"][0])
        self.norm1 = RMSNorm(rsqrt_table=rsqrt, **p["attn_norm"])
        self.qkv = requant_matvec(p["qkv"])
        self.rope = RoPE(cos=rope_cos, sin=rope_sin, **p["rope"])
        self.attention = Attention(context=context, exp2_table=exp2, **att)
        self.wo = requant_matvec(p["wo"])
        self.add1 = ResidualAdd(n=dim, **p["residual"])
        self.norm2 = RMSNorm(rsqrt_table=rsqrt, **p["ffn_norm"])
        self.w13 = requant_matvec(p["w13"])
        self.swiglu = SwiGLU(n=self._ffn, **p["swiglu"])
        self.w2 = requant_matvec(p["w2"])
        self.add2 = ResidualAdd(n=dim, **p["residual"])
        layout = data.StructLayout({"x": data.ArrayLayout(signed(16), dim),
                                    "pos": unsigned(context.bit_length())})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

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
        qd, kvd, ffn = self._q_dim, self._kv_dim, self._ffn

        busy = Signal()
        skip = Signal(data.ArrayLayout(signed(16), self._dim))
        pos = Signal(unsigned(self._context.bit_length()))
        v = Signal(data.ArrayLayout(signed(8), kvd))

        # Input: one token in flight; the skip path and pos wait in registers.
        m.d.comb += [self.norm1.i.valid.eq(self.i.valid & ~busy),
                     self.i.ready.eq(self.norm1.i.ready & ~busy),
                     self.norm1.i.payload.eq(self.i.payload.x)]
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
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += busy.eq(0)
        return m
