"""Causal multi-head attention of one layer with its KV cache (``docs/numerics.md``, Attention)."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .vector_unit import (
    adder_tree,
    bank_select,
    check_int,
    check_int_list,
    check_per_bank,
    rshift_round_var,
    shown_per_bank,
)

__all__ = ["Attention"]

# Constants of the numerics spec (docs/numerics.md); sim/golden_ops.py names them alike.
EXP_FRAC_BITS = 8           # D has 8 fraction bits: EXP2 is indexed by D & 255
EXP_ONE_BITS = 15           # EXP2[0] = 2^15, the weight of the maximum score
EXP_SHIFT_CAP = 16          # a shift D >> 8 of 16 or more gives 0
RECIP_SHIFT = 40            # r = floor(2^40 / P)
RECIP_BITS = RECIP_SHIFT - EXP_ONE_BITS + 1     # P >= 2^15, so r <= 2^25 has 26 bits
DIVIDE_CYCLES = RECIP_BITS  # restoring divider: one quotient bit a cycle
# From the last weighted-sum issue to the post unit being free again: 4 pipeline stages, a gap
# cycle, the divider, then ceil(head_dim / out_lanes) + 1 output cycles (see `Attention.cycles`).
_POST_FIXED = 6 + DIVIDE_CYCLES
# From the last score-pass issue to the first weighted-sum issue: the score pipeline's 4 stages.
_SCORE_DRAIN = 4


class Attention(wiring.Component):
    """Attention of one position over the positions ``0..p`` held in an on-chip KV cache.

    For an input transfer carrying ``q`` (``n_heads * head_dim`` int8, RoPE'd), ``k``, ``v``
    (``n_kv_heads * head_dim`` int8, ``k`` RoPE'd) and the position ``pos = p``, the unit writes
    ``k`` and ``v`` into row ``p`` of the cache, then for every head ``h`` (KV head
    ``h // (n_heads // n_kv_heads)``) computes exactly ``sim.golden_ops.attention``: scores, running
    max, ``D``, ``pr = EXP2[D & 255] >> min(D >> 8, 16)``, ``P``, ``acc``, ``r = floor(2^40 / P)``
    (restoring divider, 26 cycles) and ``out = sat_8(rshift_round(acc * r, 40))``; the output
    transfer carries ``out`` for all heads. A new sequence simply starts again at ``p = 0``: rows
    beyond ``p`` are never read.

    With ``banks > 1`` one unit serves ``banks`` layers: the ``bank`` input picks the layer, whose
    own KV cache (rows ``bank * context + p``) and ``(M_att, s_att)`` are used; bank ``b``
    computes exactly what a unit with bank ``b``'s parameters alone computes, with the same
    timing. The caches of different banks never interfere.

    Two passes per head over ``t = 0..p``, each ``C = ceil(head_dim / lanes)`` cycles per
    position: the first computes the scores (``lanes`` int8 products a cycle), writes them to a
    scratch memory of ``context`` entries and tracks the maximum; the second reads them back,
    forms ``pr`` and accumulates ``P`` and ``acc`` (``lanes`` products ``pr * v`` a cycle). The
    reciprocal and output of head ``h`` run while the scores of head ``h + 1`` are computed.
    Storing the scores (``context * score_width`` bits) rather than recomputing them in the second
    pass saves ``S`` cycles per head and a second read of K.

    Storage: K and V caches, two memories of ``banks * context`` rows of ``n_kv_heads *
    head_dim`` int8 (:attr:`kv_cache_bits`, written in the input's cycle, read one row a cycle),
    the score scratch (:attr:`scratch_bits`, shared by all banks), a 256 x 16-bit EXP2 ROM
    (shared), and registers for ``q``, ``head_dim`` accumulators of :attr:`acc_width` bits and
    the output vector.

    Parameters (keyword-only)
    -------------------------
    n_heads, n_kv_heads : int
        Query heads and KV heads; ``n_heads`` must be a multiple of ``n_kv_heads``.
    head_dim : int
    context : int
        Depth of the KV cache: positions ``0..context-1``.
    M_att, s_att : int or sequence of ``banks`` int
        Softmax multiplier (``0 <= M_att < 2^15``, ``0 <= s_att <= 62``), one for all banks or
        bank ``b``'s ``b``-th. The properties hold an int for ``banks == 1``, otherwise a tuple
        of ``banks`` ints. Each is a constant in the logic when all banks share it; otherwise a
        small mux by ``bank`` feeds a multiplier or a barrel shifter.
    exp2_table : sequence of 256 int
        ``EXP2``; entries in ``0..2^15`` and ``EXP2[0] == 2^15`` (so ``2^15 <= P``).
    lanes : int
        Multiply-accumulates a cycle in each pass, ``1..head_dim``.
    out_lanes : int or None
        Outputs ``sat_8(rshift_round(acc * r, 40))`` formed a cycle, ``1..head_dim`` (default
        ``lanes``). Each is a ~31 x 26-bit product (a dozen 18 x 18 DSP blocks), and the output
        stage runs beside the next head's score pass, so it can be narrower than the MACs.
    banks : int
        Layers served, ``>= 1`` (default 1: no ``bank`` port).

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"q", "k", "v", "pos"})))``
        ``pos`` is ``unsigned(context.bit_length())``, so ``p = context`` is representable.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), n_heads * head_dim)))``
    bank : ``In(range(banks))``, only when ``banks > 1``
        The layer; held stable from the input transfer until the output transfer has happened
        (it is read in between, not latched). A refused transfer ignores it.
    error : ``Out(1)``
        A transfer with ``pos >= context`` is accepted and dropped: nothing is written, no output
        is produced, and ``error`` is high from the next cycle until a transfer with
        ``pos < context`` is accepted.

    Timing
    ------
    ``i.ready`` is high only while idle. With ``S = (p + 1) * C`` and ``C_o = ceil(head_dim /
    out_lanes)`` the output is valid :meth:`cycles` ``(p) = 2 S + 4 + (n_heads - 1) (S +
    max(S + 4, 32 + C_o)) + 33 + C_o`` clock edges after the edge that accepted the input (4:
    the score pipeline draining before the weighted pass; 32 + C_o: four weighted-pass stages,
    a gap cycle, the 26-cycle divider and C_o + 1 output cycles); the next input is accepted at
    the edge after the output transfer. The ideal of ``lanes`` MACs a cycle is ``2 S`` per head.
    The same for every ``banks``.

    Every stage is one short step between registers: a block-RAM read, a choice of chunk, a
    product, a sum. The score pass is four stages (select k and q, their products, their sum,
    the running sum and maximum), the weighted pass four ((score - max) * M, the EXP2 address, pr
    and v, the accumulation) and the output two (the product with r, then rounding and
    saturation).
    """

    def __init__(self, *, n_heads, n_kv_heads, head_dim, context, M_att, s_att, exp2_table,
                 lanes, out_lanes=None, banks=1):
        self._banks = check_int("banks", banks, 1, None)
        self._n_heads = check_int("n_heads", n_heads, 1, None)
        self._n_kv_heads = check_int("n_kv_heads", n_kv_heads, 1, None)
        if self._n_heads % self._n_kv_heads:
            raise ValueError(f"n_heads must be a multiple of n_kv_heads, not {n_heads!r} and "
                             f"{n_kv_heads!r}")
        self._head_dim = check_int("head_dim", head_dim, 1, None)
        self._context = check_int("context", context, 1, None)
        self._M_atts = check_per_bank("M_att", M_att, 0, (1 << EXP_ONE_BITS) - 1, self._banks)
        self._s_atts = check_per_bank("s_att", s_att, 0, 62, self._banks)
        table = check_int_list("exp2_table", exp2_table, 0, 1 << EXP_ONE_BITS,
                               length=1 << EXP_FRAC_BITS)
        if table[0] != 1 << EXP_ONE_BITS:
            raise ValueError(f"exp2_table[0] must be {1 << EXP_ONE_BITS}, not {table[0]!r}")
        self._exp2_table = table
        self._lanes = check_int("lanes", lanes, 1, self._head_dim)
        self._out_lanes = (self._lanes if out_lanes is None
                           else check_int("out_lanes", out_lanes, 1, self._head_dim))

        self._in_layout = data.StructLayout({
            "q": data.ArrayLayout(signed(8), self._n_heads * self._head_dim),
            "k": data.ArrayLayout(signed(8), self._n_kv_heads * self._head_dim),
            "v": data.ArrayLayout(signed(8), self._n_kv_heads * self._head_dim),
            "pos": unsigned(self._context.bit_length()),
        })
        self._out_layout = data.ArrayLayout(signed(8), self._n_heads * self._head_dim)
        members = {
            "i": In(stream.Signature(self._in_layout)),
            "o": Out(stream.Signature(self._out_layout)),
            "error": Out(1),
        }
        if self._banks > 1:
            members["bank"] = In(range(self._banks))
        super().__init__(members)

    n_heads = property(lambda self: self._n_heads)
    n_kv_heads = property(lambda self: self._n_kv_heads)
    head_dim = property(lambda self: self._head_dim)
    context = property(lambda self: self._context)
    banks = property(lambda self: self._banks)
    M_att = property(lambda self: shown_per_bank(self._M_atts))
    s_att = property(lambda self: shown_per_bank(self._s_atts))
    exp2_table = property(lambda self: self._exp2_table)
    lanes = property(lambda self: self._lanes)
    out_lanes = property(lambda self: self._out_lanes)

    @property
    def chunks(self):
        """``C = ceil(head_dim / lanes)``: cycles per position and pass."""
        return -(-self._head_dim // self._lanes)

    @property
    def out_chunks(self):
        """``C_o = ceil(head_dim / out_lanes)``: output cycles per head."""
        return -(-self._head_dim // self._out_lanes)

    @property
    def score_width(self):
        """Signed bits of a score: ``bit_length(head_dim * 2^14) + 1``."""
        return (self._head_dim << 14).bit_length() + 1

    @property
    def sum_width(self):
        """Unsigned bits of ``P``: ``bit_length(context * 2^15)``."""
        return (self._context << EXP_ONE_BITS).bit_length()

    @property
    def acc_width(self):
        """Signed bits of ``acc``: ``bit_length(context * 2^22) + 1``."""
        return (self._context << (EXP_ONE_BITS + 7)).bit_length() + 1

    @property
    def kv_cache_bits(self):
        """Bits of the K and V memories: ``2 * banks * context * n_kv_heads * head_dim * 8``."""
        return 2 * self._banks * self._context * self._n_kv_heads * self._head_dim * 8

    @property
    def scratch_bits(self):
        """Bits of the score memory (one for all banks): ``context * score_width``."""
        return self._context * self.score_width

    @property
    def score_drain(self):
        """Cycles from a head's last score-pass issue to its first weighted-sum issue."""
        return _SCORE_DRAIN

    @property
    def post_cycles(self):
        """Cycles from a head's last weighted-sum issue until the post unit (reciprocal and
        output) is free: ``32 + C_o``."""
        return _POST_FIXED + self.out_chunks

    def cycles(self, position):
        """Clock edges from the input transfer to the output's ``valid`` at ``position``:
        ``2 S + drain + (n_heads - 1) (S + max(S + drain, post)) + post + 1`` with
        ``S = (position + 1) C``, ``drain`` = :attr:`score_drain` and ``post`` =
        :attr:`post_cycles`."""
        position = check_int("position", position, 0, self._context - 1)
        S = (position + 1) * self.chunks
        drain, post = self.score_drain, self.post_cycles
        return 2 * S + drain + (self._n_heads - 1) * (S + max(S + drain, post)) + post + 1

    def elaborate(self, platform):
        m = Module()
        H, G, hd, L, C = self._n_heads, self._n_kv_heads, self._head_dim, self._lanes, self.chunks
        group = H // G
        n_kv = G * hd
        rows = self._banks * self._context

        m.submodules.k_mem = k_mem = memory.Memory(
            shape=data.ArrayLayout(signed(8), n_kv), depth=rows, init=[])
        m.submodules.v_mem = v_mem = memory.Memory(
            shape=data.ArrayLayout(signed(8), n_kv), depth=rows, init=[])
        m.submodules.score_mem = score_mem = memory.Memory(
            shape=signed(self.score_width), depth=self._context, init=[])
        m.submodules.exp2_rom = exp2_rom = memory.Memory(
            shape=unsigned(EXP_ONE_BITS + 1), depth=1 << EXP_FRAC_BITS, init=self._exp2_table)
        k_wr, v_wr = k_mem.write_port(), v_mem.write_port()
        k_rd, v_rd = k_mem.read_port(), v_mem.read_port()
        score_wr = score_mem.write_port()
        # The weighted pass starts after the last score is written, so no read is transparent.
        score_rd = score_mem.read_port()
        exp2_rd = exp2_rom.read_port()

        def element(row, index):
            return row.as_value()[8 * index:8 * index + 8].as_signed()

        q = Signal(data.ArrayLayout(signed(8), H * hd))
        p = Signal(range(self._context))
        h = Signal(range(H))
        g = Signal(range(G))
        h_in_group = Signal(range(group))
        t = Signal(range(self._context))
        c = Signal(range(C))
        last_c = c == C - 1
        last_t = t == p

        # Pipeline registers: score pass stages B-E (s1..s4), weighted pass stages B-E (w1..w4),
        # each a (valid, t, c, ...) tuple that moves one stage a cycle. Every stage is one short
        # register-to-register step: the clock was lost in the long ones (docs/fpga.md).
        def stages(prefix, count, **extra):
            like = dict(valid=Signal(), t=t, c=c, **extra)
            return [[Signal.like(v, name=f"{prefix}{n}_{k}") for k, v in like.items()]
                    for n in range(1, count + 1)]
        s_stages = stages("s", 4)
        w_stages = stages("w", 4, g=g, h=h, last=Signal())
        (s1_valid, s1_t, s1_c), (s2_valid, *_), (s3_valid, *_), (s4_valid, s4_t, s4_c) = s_stages
        (w1_valid, w1_t, w1_c, w1_g, w1_h, w1_last), (w2_valid, w2_t, *_), \
            (w3_valid, _, w3_c, w3_g, *_), (w4_valid, w4_t, w4_c, _, w4_h, w4_last) = w_stages
        for pipe in (s_stages, w_stages):
            for src, dst in zip(pipe, pipe[1:], strict=False):
                m.d.sync += [b.eq(a) for a, b in zip(src, dst, strict=True)]
        m.d.sync += [s1_valid.eq(0), w1_valid.eq(0)]
        w3_zero, w3_shift = Signal(), Signal(range(EXP_SHIFT_CAP))

        partial = Signal(signed(self.score_width))
        mx = Signal(signed(self.score_width))
        total = Signal(self.sum_width)
        acc = [Signal(signed(self.acc_width), name=f"acc{j}") for j in range(hd)]
        out = Signal(self._out_layout)
        post_busy = Signal()
        # Stage E writes the last score (and the maximum) at the edge before WSUM's first read.
        scoring = s1_valid | s2_valid | s3_valid
        busy = w1_valid | w2_valid | w3_valid | w4_valid | post_busy

        def advance(on_last):
            with m.If(last_c):
                m.d.sync += c.eq(0)
                with m.If(last_t):
                    m.d.sync += t.eq(0)
                    on_last()
                with m.Else():
                    m.d.sync += t.eq(t + 1)
            with m.Else():
                m.d.sync += c.eq(c + 1)

        accept = self.i.valid & self.i.ready
        in_range = self.i.payload.pos < self._context
        # Bank b's cache rows follow bank b-1's; `bank` is stable from input to output transfer.
        if self._banks > 1:
            base = Signal(range(rows))
            m.d.comb += base.eq(self.bank * self._context)

            def row(position):
                return base + position
        else:
            def row(position):
                return position
        m.d.comb += [
            k_wr.addr.eq(row(self.i.payload.pos)), k_wr.data.eq(self.i.payload.k),
            v_wr.addr.eq(row(self.i.payload.pos)), v_wr.data.eq(self.i.payload.v),
            k_wr.en.eq(accept & in_range), v_wr.en.eq(accept & in_range),
            k_rd.addr.eq(row(t)), score_rd.addr.eq(t), v_rd.addr.eq(row(w2_t)),
            self.o.payload.eq(out),
        ]

        with m.FSM(name="main"):
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If(in_range):
                        m.d.sync += [q.eq(self.i.payload.q), p.eq(self.i.payload.pos),
                                     h.eq(0), g.eq(0), h_in_group.eq(0), t.eq(0), c.eq(0),
                                     self.error.eq(0)]
                        m.next = "SCORE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)

            with m.State("SCORE"):
                m.d.sync += [s1_valid.eq(1), s1_t.eq(t), s1_c.eq(c)]

                def to_weighted():
                    m.next = "WAIT"
                advance(to_weighted)

            # The weighted pass needs every score and the maximum, and the accumulators free.
            with m.State("WAIT"), m.If(~scoring & ~busy):
                m.next = "WSUM"

            with m.State("WSUM"):
                m.d.sync += [w1_valid.eq(1), w1_t.eq(t), w1_c.eq(c), w1_g.eq(g), w1_h.eq(h),
                             w1_last.eq(last_c & last_t)]

                def next_head():
                    with m.If(h == H - 1):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += h.eq(h + 1)
                        with m.If(h_in_group == group - 1):
                            m.d.sync += [h_in_group.eq(0), g.eq(g + 1)]
                        with m.Else():
                            m.d.sync += h_in_group.eq(h_in_group + 1)
                        m.next = "SCORE"
                advance(next_head)

            with m.State("FINISH"), m.If(~busy):
                m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"

        # Score pass. Stage B: the K row of position s1_t arrived; pick this chunk's k and q.
        # Stage C: their products. Stage D: the sum of the products. Stage E: add it to the
        # earlier chunks', write the score of a complete position and track the maximum.
        k_sel = [Signal(signed(8), name=f"k_sel{lane}") for lane in range(L)]
        q_sel = [Signal(signed(8), name=f"q_sel{lane}") for lane in range(L)]
        for lane in range(L):
            k_chunk = Array(Array(element(k_rd.data, gg * hd + cc * L + lane)
                                  if cc * L + lane < hd else Const(0, signed(8))
                                  for cc in range(C)) for gg in range(G))
            q_chunk = Array(Array(element(q, hh * hd + cc * L + lane)
                                  if cc * L + lane < hd else Const(0, signed(8))
                                  for cc in range(C)) for hh in range(H))
            m.d.sync += [k_sel[lane].eq(k_chunk[g][s1_c]), q_sel[lane].eq(q_chunk[h][s1_c])]
        qk = [Signal(signed(16), name=f"qk{lane}") for lane in range(L)]
        m.d.sync += [qk[lane].eq(k_sel[lane] * q_sel[lane]) for lane in range(L)]
        dot = Signal(signed(self.score_width))
        m.d.sync += dot.eq(adder_tree(qk))
        score = Signal(signed(self.score_width))
        m.d.comb += score.eq(Mux(s4_c == 0, 0, partial) + dot)
        with m.If(s4_valid):
            m.d.sync += partial.eq(score)
            with m.If(s4_c == C - 1):
                m.d.comb += [score_wr.en.eq(1), score_wr.addr.eq(s4_t), score_wr.data.eq(score)]
                with m.If((s4_t == 0) | (score > mx)):
                    m.d.sync += mx.eq(score)

        # Weighted pass. Stage B: the score arrived; (score - mx) * M. Stage C: D =
        # -rshift_round((score - mx) * M, s) >= 0 addresses EXP2 (and V's row is read). M and s
        # are constants unless the banks differ in them.
        bank = self.bank if self._banks > 1 else None
        M_att = bank_select(m, bank, self._M_atts, range(max(self._M_atts) + 1), name="M_att")
        s_att = bank_select(m, bank, self._s_atts, range(max(self._s_atts) + 1), name="s_att")
        product = (score_rd.data - mx) * M_att
        scaled = Signal(signed(len(product)))
        m.d.sync += scaled.eq(product)
        if isinstance(s_att, int):
            rounded = (scaled + (1 << (s_att - 1)) if s_att else scaled) >> s_att
        else:
            # rshift_round(x, s) == rshift_round(2x, s + 1): exact for s = 0 too, one shifter.
            rounded = rshift_round_var(scaled << 1, s_att)
        D = Signal(signed(len(rounded) + 1))
        m.d.comb += [D.eq(-rounded), exp2_rd.addr.eq(D[:EXP_FRAC_BITS])]
        m.d.sync += [w3_zero.eq(D >= EXP_SHIFT_CAP << EXP_FRAC_BITS),
                     w3_shift.eq(D[EXP_FRAC_BITS:EXP_FRAC_BITS + 4])]

        # Stage D: the EXP2 entry and the V row arrived; pr and this chunk's v. Stage E:
        # accumulate P and the chunk of acc.
        pr = Signal(EXP_ONE_BITS + 1)
        m.d.sync += pr.eq(Mux(w3_zero, 0, exp2_rd.data >> w3_shift))
        first = w4_t == 0
        with m.If(w4_valid & (w4_c == 0)):
            m.d.sync += total.eq(Mux(first, 0, total) + pr)
        for lane in range(L):
            v_sel = Signal(signed(8), name=f"v_sel{lane}")
            m.d.sync += v_sel.eq(Array(Array(element(v_rd.data, gg * hd + cc * L + lane)
                                             if cc * L + lane < hd else Const(0, signed(8))
                                             for cc in range(C)) for gg in range(G))[w3_g][w3_c])
            acc_old = Array(acc[cc * L + lane] if cc * L + lane < hd
                            else Const(0, signed(self.acc_width)) for cc in range(C))[w4_c]
            acc_new = Signal(signed(self.acc_width), name=f"acc_new{lane}")
            m.d.comb += acc_new.eq(Mux(first, 0, acc_old) + pr * v_sel)
            for cc in range(C):
                if cc * L + lane < hd:
                    with m.If(w4_valid & (w4_c == cc)):
                        m.d.sync += acc[cc * L + lane].eq(acc_new)

        # Post unit: r = floor(2^40 / P) by restoring division, then out = sat_8(acc * r >> 40)
        # in two stages (the product, then rounding and saturation), C_o + 1 cycles.
        # P >= 2^15, so the quotient bits above 2^25 are 0 and the remainder after them is 2^14.
        rem = Signal(self.sum_width + 1)
        quo = Signal(RECIP_BITS)
        Lo, Co = self._out_lanes, self.out_chunks
        count = Signal(range(max(DIVIDE_CYCLES, Co + 1)))
        post_h = Signal.like(h)
        rem2 = rem << 1
        wr_valid, wr_count = Signal(), Signal.like(count)
        weighted = [Signal(signed(self.acc_width + RECIP_BITS), name=f"weighted{lane}")
                    for lane in range(Lo)]
        m.d.sync += wr_valid.eq(0)
        with m.FSM(name="post"):
            with m.State("IDLE"), m.If(w4_valid & w4_last):
                m.d.sync += [rem.eq(1 << (EXP_ONE_BITS - 1)), quo.eq(0), count.eq(0),
                             post_h.eq(w4_h)]
                m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += post_busy.eq(1)
                with m.If(rem2 >= total):
                    m.d.sync += [rem.eq(rem2 - total), quo.eq(Cat(Const(1, 1), quo))]
                with m.Else():
                    m.d.sync += [rem.eq(rem2), quo.eq(Cat(Const(0, 1), quo))]
                m.d.sync += count.eq(count + 1)
                with m.If(count == DIVIDE_CYCLES - 1):
                    m.d.sync += count.eq(0)
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += post_busy.eq(1)
                for lane in range(Lo):
                    acc_elem = Array(acc[cc * Lo + lane] if cc * Lo + lane < hd
                                     else Const(0, signed(self.acc_width)) for cc in range(Co))
                    m.d.sync += weighted[lane].eq(acc_elem[count] * quo)
                m.d.sync += [wr_valid.eq(count < Co), wr_count.eq(count), count.eq(count + 1)]
                with m.If(count == Co):
                    m.d.sync += count.eq(0)
                    m.next = "IDLE"
        for lane in range(Lo):
            rounded = (weighted[lane] + (1 << (RECIP_SHIFT - 1))) >> RECIP_SHIFT
            value = Signal(signed(8), name=f"out_lane{lane}")
            m.d.comb += value.eq(Mux(rounded > 127, 127, Mux(rounded < -128, -128, rounded)))
            for hh in range(H):
                for cc in range(Co):
                    if cc * Lo + lane < hd:
                        with m.If(wr_valid & (post_h == hh) & (wr_count == cc)):
                            m.d.sync += out[hh * hd + cc * Lo + lane].eq(value)
        return m
