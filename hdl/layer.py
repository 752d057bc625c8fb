"""One decoder layer datapath, shared by every layer of the model: attention block and SwiGLU
block, each closed by its residual add, with the layer's constants picked by ``index``."""

import math

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .attention import Attention
from .matvec import MatVec
from .residual import ResidualAdd
from .rope import RoPE
from .swiglu import SwiGLU

__all__ = ["DecoderLayer", "MATRICES", "NORMS", "layer_matrices", "layer_norms", "matvec_request",
           "matvec_result", "requant_matvec", "stack_layers", "stack_matrices", "stack_norms"]


def requant_matvec(params):
    """A :class:`MatVec` with requantized whole-vector output from a
    :func:`hardwire.gen.hardware.decoder_params` matvec dict, or from :func:`stack_matrices`'
    (whose "banks" and per-bank "out_bits" it passes on)."""
    kwargs = {}
    if params["group_mult"] is not None:
        kwargs.update(group_size=params["group_size"], group_mult=params["group_mult"])
    return MatVec(weights=params["weights"], lanes=params["lanes"], bits=params["bits"],
                  requant=(params["M"], params["shift"], params["out_bits"]),
                  banks=params.get("banks", 1), rows_per_cycle=params.get("rows_per_cycle", 1),
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


def stack_matrices(mats):
    """One matvec dict holding the matrices ``mats`` (any shapes) as the banks of one
    :class:`MatVec`, bank ``b`` being ``mats[b]``; "banks" gives their rows, "out_bits" is a
    tuple per bank and "lanes" the most any of them asked for.

    Scale groups must chunk every bank alike: when some matrices have groups, all share the
    greatest common group size (also dividing every bank's inputs when one of them is not a
    multiple of it), the others' multipliers repeated (:func:`_regrouped`) or all 1. A GGUF
    may keep a projection as blocks in some layers only, or with other block sizes."""
    sizes = {mv["group_size"] for mv in mats if mv["group_mult"] is not None}
    size = math.gcd(*sizes) if sizes else None
    n_ins = [len(mv["weights"][0]) for mv in mats]
    if size is not None and any(n % size for n in n_ins):
        size = math.gcd(size, *n_ins)
    lanes = max(mv["lanes"] for mv in mats)
    return {
        "weights": sum((mv["weights"] for mv in mats), ()),
        "bits": max(mv["bits"] for mv in mats),
        "group_size": size,
        "group_mult": None if size is None else sum((_regrouped(mv, size) for mv in mats), ()),
        "M": sum((mv["M"] for mv in mats), ()),
        "shift": sum((mv["shift"] for mv in mats), ()),
        "out_bits": tuple(mv["out_bits"] for mv in mats),
        "lanes": lanes if size is None else min(lanes, size),
        "banks": tuple(len(mv["weights"]) for mv in mats),
    }


def stack_norms(norms):
    """One norm dict holding ``norms`` as the banks of one :class:`RMSNorm`, bank ``b`` being
    ``norms[b]``: gains concatenated, shifts and ``eps_int`` as tuples, the first's lanes."""
    return {"gain": sum((n["gain"] for n in norms), ()),
            "shift": tuple(n["shift"] for n in norms),
            "eps_int": tuple(n["eps_int"] for n in norms),
            "lanes": norms[0]["lanes"]}


#: The layer's norms, in their order along the datapath: bank ``2 * layer + k`` of the shared
#: :class:`RMSNorm` is norm ``NORMS[k]`` of layer ``layer`` (:func:`layer_norms`).
NORMS = ("attn_norm", "ffn_norm")


def layer_norms(layers):
    """The norm dicts of every layer's norms in bank order (:data:`NORMS`)."""
    return [lp[name] for lp in layers for name in NORMS]


#: The layer's matrices, in their order along the datapath: bank ``4 * layer + k`` of the shared
#: :class:`MatVec` is matrix ``MATRICES[k]`` of layer ``layer`` (:func:`layer_matrices`).
MATRICES = ("qkv", "wo", "w13", "w2")


def layer_matrices(layers):
    """The matvec dicts of every layer's matrices in bank order (:data:`MATRICES`)."""
    return [lp[name] for lp in layers for name in MATRICES]


def stack_layers(layers):
    """The per-layer dicts of ``decoder_params(...)["layers"]`` as one dict of stacked banks
    (layer ``b`` is bank ``b`` of every unit but the matrices and the norms, which
    :func:`layer_matrices` and :func:`layer_norms` give to the shared :class:`MatVec` and
    :class:`RMSNorm`): SILU tables concatenated, per-layer scalars as tuples. Units that carry
    no per-layer constant (RoPE, residual add) take the first layer's parameters."""
    first = layers[0]
    for key in ("rope", "residual"):
        if any(lp[key] != first[key] for lp in layers):
            raise ValueError(f"{key}: the layers differ and cannot share one unit")
    att = dict(first["attention"])
    att.update(M_att=tuple(lp["attention"]["M_att"] for lp in layers),
               s_att=tuple(lp["attention"]["s_att"] for lp in layers))
    return {
        "rope": first["rope"],
        "attention": att,
        "residual": first["residual"],
        "swiglu": {"silu_table": sum((lp["swiglu"]["silu_table"] for lp in layers), ()),
                   "M": tuple(lp["swiglu"]["M"] for lp in layers),
                   "s": tuple(lp["swiglu"]["s"] for lp in layers),
                   "lanes": first["swiglu"]["lanes"]},
    }


def _link(m, src, dst, payload=None):
    # Pass-through glue: valid and payload from the producer, ready from the consumer, so the
    # producer's valid never depends on ready.
    m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                 dst.payload.eq(src.payload if payload is None else payload)]


def matvec_request(matvec):
    """The layout of a request to the shared ``matvec``: the input vector ``x`` (a bank's
    inputs first, the rest ignored) and the ``bank``."""
    return data.StructLayout({"x": data.ArrayLayout(signed(8), matvec.in_features),
                              "bank": range(matvec.banks)})


def matvec_result(m, matvec, payload, bank, bits):
    """Bank ``bank``'s requantized vector from the shared ``matvec``'s output ``payload`` (its
    ``bank_rows[bank]`` elements from ``bank_first``), as ``bits``-bit elements (the bank's own
    width)."""
    rows = matvec.bank_rows[bank]
    first = matvec.bank_first(bank)
    out = Signal(data.ArrayLayout(signed(bits), rows), name=f"bank{bank}_result")
    m.d.comb += [out[k].eq(payload[first + k]) for k in range(rows)]
    return out


class DecoderLayer(wiring.Component):
    """RMSNorm → QKV matvec → RoPE over [q|k] → Attention → wo → residual add → RMSNorm → W13
    matvec → SwiGLU → w2 → residual add, one token at a time, for any of the model's layers.

    One datapath serves all ``n_layers`` layers: every unit with per-layer constants holds them
    for all layers in stacked ROMs ("banks", :func:`stack_layers`) and the KV caches hold all
    layers' rows; ``index`` picks the bank. Only one token is ever in flight and the layers run
    one after another, so sharing costs no cycle and divides the logic by ``n_layers``.

    For the same reason the units a layer uses twice exist once: one residual add closes both
    blocks, and the two norms are banks of one :class:`RMSNorm` outside the layer (the
    decoder's, which also computes the final norm), reached on ``norm_i``/``norm_o``. The four
    matrix–vector products are not in the layer either: it sends each input vector on ``mv_i``
    to one shared :class:`MatVec` (the decoder's, which also serves the LM head) with the bank
    of the matrix, and takes the product back on ``mv_o``. One multiplier array of ``lanes``
    thus does the work of five.

    Parameters
    ----------
    layers : tuple of dict
        ``decoder_params(...)["layers"]``, one dict per layer.
    dim, context : int
    exp2 : tuple of int
        The shared EXP2 table.
    rope_cos, rope_sin : tuple of tuple of int
        ``[context][head_dim/2]`` Q1.14 tables.
    matvec : MatVec
        The shared unit, whose bank ``4 * layer + k`` is matrix :data:`MATRICES` ``[k]`` of
        ``layer`` (:func:`layer_matrices` first in its banks). The layer only reads its shape
        and timing; the decoder elaborates it.
    norm : RMSNorm
        The shared norm, whose bank ``2 * layer + k`` is norm :data:`NORMS` ``[k]`` of ``layer``
        (:func:`layer_norms` first in its banks). Read and elaborated like ``matvec``.

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
    norm_i : ``Out(stream.Signature(ArrayLayout(signed(16), dim)))``
        The vector to normalize: the layer input, then the attention block's sum.
    norm_o : ``In(stream.Signature(ArrayLayout(signed(8), dim)))``
        The normalized vector of the last request.
    norm_bank : ``Out(range(norm.banks))``
        The norm's bank, right from the cycle after each ``norm_i`` transfer (which is when the
        shared :class:`RMSNorm` reads it) until the result is back.
    mv_i : ``Out(stream.Signature(matvec_request(matvec)))``
        The input vector of the next product and its bank; at most one is outstanding.
    mv_o : ``In(stream.Signature(<matvec.o's payload>))``
        The product of the last request.
    index : ``In(range(n_layers))`` (only with ``n_layers > 1``)
        The layer the token in flight is in, from the cycle after the input transfer until the
        output transfer (at a loop-back it may change at the transfer edge).

    Timing
    ------
    :meth:`cycles` ``(pos)``: clock edges from the input transfer to the output transfer with
    ``o`` always ready and ``norm_i``/``norm_o``, ``mv_i``/``mv_o`` wired straight to the shared
    units, the sum of the units' latencies and the four banks' (the glue adds no register), the
    same for every layer. ``i.ready`` depends combinationally on ``o.ready``.
    """

    def __init__(self, *, layers, dim, context, exp2, rope_cos, rope_sin, matvec, norm):
        self._n_layers = n = len(layers)
        p = stack_layers(layers)
        self._dim, self._context = dim, context
        att = p["attention"]
        self._q_dim = att["n_heads"] * att["head_dim"]
        self._kv_dim = att["n_kv_heads"] * att["head_dim"]
        self._ffn = len(layers[0]["w2"]["weights"][0])
        self._matvec, self._norm = matvec, norm
        self.rope = RoPE(cos=rope_cos, sin=rope_sin, **p["rope"])
        self.attention = Attention(context=context, exp2_table=exp2, banks=n, **att)
        self.add = ResidualAdd(n=dim, **p["residual"])
        self.swiglu = SwiGLU(n=self._ffn, banks=n, **p["swiglu"])
        layout = data.StructLayout({"x": data.ArrayLayout(signed(16), dim),
                                    "pos": unsigned(context.bit_length())})
        members = {"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout)),
                   "norm_i": Out(stream.Signature(data.ArrayLayout(signed(16), dim))),
                   "norm_o": In(stream.Signature(data.ArrayLayout(signed(8), dim))),
                   "norm_bank": Out(range(norm.banks)),
                   "mv_i": Out(stream.Signature(matvec_request(matvec))),
                   "mv_o": In(stream.Signature(matvec.o.payload.shape()))}
        if n > 1:
            members["index"] = In(range(n))
        super().__init__(members)

    @property
    def n_layers(self):
        return self._n_layers

    BANKED = ("attention", "swiglu")

    @property
    def matrix_cycles(self):
        """The part of :meth:`cycles` the four products take: their banks' latencies."""
        return sum(self._matvec.bank_latency(k) for k in range(len(MATRICES)))

    def cycles(self, pos):
        """Clock edges from the input transfer to the output transfer at position ``pos``."""
        return (2 * self._norm.latency + self.rope.latency + self.attention.cycles(pos)
                + 2 * self.add.latency + self.swiglu.latency + self.matrix_cycles)

    def elaborate(self, platform):
        m = Module()
        for name in ("rope", "attention", "add", "swiglu"):
            m.submodules[name] = getattr(self, name)
        index = self.index if self._n_layers > 1 else 0
        if self._n_layers > 1:
            m.d.comb += [getattr(self, name).bank.eq(self.index) for name in self.BANKED]
        qd, kvd, ffn_dim = self._q_dim, self._kv_dim, self._ffn
        mv = self._matvec

        busy = Signal()
        ffn = Signal()          # the token is in the FFN block: from the attention block's sum on
        skip = Signal(data.ArrayLayout(signed(16), self._dim))
        pos = Signal(unsigned(self._context.bit_length()))
        v = Signal(data.ArrayLayout(signed(8), kvd))

        # Input: one token in flight; the skip path and pos wait in registers. The token in the
        # layer leaving frees it in the same cycle (the norm has long been idle by then).
        leaving = Signal()
        m.d.comb += leaving.eq(self.o.valid & self.o.ready)
        free = ~busy | leaving
        with m.If(leaving):
            m.d.sync += [busy.eq(0), ffn.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [busy.eq(1), skip.eq(self.i.payload.x), pos.eq(self.i.payload.pos)]

        # The norm's two requests, never at once: the layer input, and the attention block's
        # sum, which is also the FFN block's skip path.
        from_sum = Signal()
        m.d.comb += [
            from_sum.eq(self.add.o.valid & ~ffn),
            self.norm_i.valid.eq((self.i.valid & free) | from_sum),
            self.i.ready.eq(self.norm_i.ready & free),
            self.norm_i.payload.eq(Mux(busy & ~ffn, self.add.o.payload, self.i.payload.x)),
            self.norm_bank.eq(index * len(NORMS) + ffn),
        ]
        with m.If(from_sum & self.norm_i.ready):
            m.d.sync += [ffn.eq(1), skip.eq(self.add.o.payload)]

        # The four products' inputs take turns on `mv_i` (one is valid at a time: one token is
        # in flight, and each waits for the product before it); `kind` remembers whose product
        # comes back on `mv_o`. The norm's result is the first (qkv) or third (w13) input.
        producers = {"qkv": self.norm_o, "wo": self.attention.o, "w13": self.norm_o,
                     "w2": self.swiglu.o}
        kind = Signal(range(len(MATRICES)))
        offered = Signal(range(len(MATRICES)))
        m.d.comb += offered.eq(Mux(ffn, MATRICES.index("w13"), MATRICES.index("qkv")))
        for name in ("wo", "w2"):
            with m.If(producers[name].valid):
                m.d.comb += offered.eq(MATRICES.index(name))
        request = self.mv_i.payload
        sources = (self.norm_o, self.attention.o, self.swiglu.o)
        m.d.comb += [self.mv_i.valid.eq(Cat(src.valid for src in sources).any()),
                     request.bank.eq(index * len(MATRICES) + offered)]
        with m.Switch(offered):
            for k, name in enumerate(MATRICES):
                with m.Case(k):
                    src = producers[name].payload
                    m.d.comb += request.x.as_value()[:len(src.as_value())].eq(src)
        m.d.comb += [src.ready.eq(self.mv_i.ready) for src in sources]
        with m.If(self.mv_i.valid & self.mv_i.ready):
            m.d.sync += kind.eq(offered)

        consumers = {"qkv": self.rope.i, "wo": self.add.i, "w13": self.swiglu.i,
                     "w2": self.add.i}
        for dst in (self.rope.i, self.add.i, self.swiglu.i):
            ks = [k for k, name in enumerate(MATRICES) if consumers[name] is dst]
            m.d.comb += dst.valid.eq(self.mv_o.valid & Cat(kind == k for k in ks).any())
        with m.Switch(kind):
            for k, name in enumerate(MATRICES):
                with m.Case(k):
                    m.d.comb += self.mv_o.ready.eq(consumers[name].ready)
        qkv, wo, w13, w2 = (matvec_result(m, mv, self.mv_o.payload, k, mv.bank_out_bits(k))
                            for k in range(len(MATRICES)))

        # [q|k|v] → RoPE rotates [q|k]; v waits for the attention input.
        qkv = qkv.as_value()
        m.d.comb += [self.rope.i.payload.v.eq(qkv[:8 * (qd + kvd)]),
                     self.rope.i.payload.pos.eq(pos)]
        with m.If(self.rope.i.valid & self.rope.i.ready):
            m.d.sync += v.eq(qkv[8 * (qd + kvd):])
        rot = self.rope.o.payload.as_value()
        att_in = Signal(self.attention.i.payload.shape())
        m.d.comb += [att_in.q.eq(rot[:8 * qd]), att_in.k.eq(rot[8 * qd:]), att_in.v.eq(v),
                     att_in.pos.eq(pos)]
        _link(m, self.rope.o, self.attention.i, att_in)
        w13 = w13.as_value()
        m.d.comb += [self.swiglu.i.payload.gate.eq(w13[:8 * ffn_dim]),
                     self.swiglu.i.payload.up.eq(w13[8 * ffn_dim:])]
        # wo and w2 both add onto the skip path (the layer input, then the attention block's sum).
        m.d.comb += [self.add.i.payload.x.eq(skip),
                     self.add.i.payload.y.eq(Mux(kind == MATRICES.index("w2"), w2, wo))]

        m.d.comb += [self.add.o.ready.eq(Mux(ffn, self.o.ready, self.norm_i.ready)),
                     self.o.valid.eq(self.add.o.valid & ffn),
                     self.o.payload.x.eq(self.add.o.payload), self.o.payload.pos.eq(pos)]
        return m
