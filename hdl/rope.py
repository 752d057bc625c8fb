"""Rotary position embedding of int8 ``q``/``k`` vectors with Q1.14 cos/sin tables in a ROM."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .vector_unit import (
    LanePlan,
    Sequencer,
    VectorUnit,
    check_int,
    check_int_list,
    collect_slots,
    rshift_round_const,
    saturate,
    slot_registers,
)

__all__ = ["RoPE"]

ROPE_FRAC = 14
PAIRINGS = ("half", "interleaved")


class RoPE(VectorUnit):
    """RoPE of ``docs/numerics.md`` at position ``pos``, per head, per pair ``(a, b)``::

        a' = sat_8(rshift_round(a * C[pos, j] - b * S[pos, j], 14))
        b' = sat_8(rshift_round(a * S[pos, j] + b * C[pos, j], 14))

    with ``(a, b) = (v[j], v[j + hd/2])`` (``pairing="half"``) or ``(v[2j], v[2j + 1])``
    (``pairing="interleaved"``) inside each head.

    Parameters
    ----------
    cos, sin : list of list of int
        ``[context][head_dim // 2]`` Q1.14 tables (int16). One ROM word per (position, chunk) holds
        the ``(C, S)`` pairs of one chunk, shared by every head in the cycle: no copy per head.
    n_heads : int
        Heads in the vector (``n = n_heads * head_dim`` elements).
    pairing : ``"half"`` or ``"interleaved"``
    lanes : int
        Pairs rotated per cycle (4 multipliers each): ``1..head_dim/2``, or a multiple of
        ``head_dim/2`` up to ``n_heads * head_dim/2`` (whole heads per cycle).

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"v": ArrayLayout(signed(8), n),
    "pos": unsigned(bit_length(context - 1))})))``
        ``pos`` must be ``< context`` (the top level never lets it reach ``context``; a larger
        ``pos`` reads an unspecified table row). Latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), n)))``

    Timing
    ------
    ``slots = ceil(n_heads / heads_per_cycle) * ceil((head_dim/2) / pairs_per_head)`` where
    ``lanes <= head_dim/2`` gives ``(heads_per_cycle, pairs_per_head) = (1, lanes)`` and a larger
    ``lanes`` gives ``(lanes / (head_dim/2), head_dim/2)``.
    ``latency = cycles_per_vector = slots + 3`` clock edges from the input transfer to the output
    transfer (``o`` always ready), and between input transfers: a slot's table word is read,
    its sums of products are registered, then rounded and saturated (two stages, for the clock).
    """
    EXTRA_CYCLES = 3

    def __init__(self, *, cos, sin, n_heads, pairing, lanes):
        self._cos = self._check_table("cos", cos)
        self._sin = self._check_table("sin", sin)
        if len(self._sin) != len(self._cos) or len(self._sin[0]) != len(self._cos[0]):
            raise ValueError(f"sin must have the shape of cos ({len(self._cos)} x "
                             f"{len(self._cos[0])}), not {len(self._sin)} x {len(self._sin[0])}")
        self._context, self._half = len(self._cos), len(self._cos[0])
        self._n_heads = check_int("n_heads", n_heads, 1, None)
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be 'half' or 'interleaved', not {pairing!r}")
        self._pairing = pairing
        self._n = self._n_heads * 2 * self._half
        self._lanes = check_int("lanes", lanes, 1, self._n_heads * self._half)
        self._plan = plan = LanePlan(segments=self._n_heads, length=self._half,
                                     lanes=self._lanes, what="pairs")
        per, chunks = plan.per_segment, plan.chunks_per_segment
        words = []
        for p in range(self._context):
            for c in range(chunks):
                pairs = [c * per + l for l in range(per)]
                words.append([{"cos": self._cos[p][j] if j < self._half else 0,
                               "sin": self._sin[p][j] if j < self._half else 0} for j in pairs])
        self._word = data.ArrayLayout(data.StructLayout({"cos": signed(16), "sin": signed(16)}),
                                      per)
        self._rom = MemoryData(shape=self._word, depth=len(words), init=words)
        vec = data.ArrayLayout(signed(8), self._n)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "v": vec, "pos": unsigned(max(1, (self._context - 1).bit_length()))}))),
            "o": Out(stream.Signature(vec)),
        })

    @staticmethod
    def _check_table(name, table):
        try:
            rows = [list(row) for row in table]
        except TypeError:
            raise TypeError(f"{name} must be a list of rows of integers, not {table!r}") from None
        if not rows or not rows[0]:
            raise ValueError(f"{name} must have at least one position and one pair")
        for p, row in enumerate(rows):
            if len(row) != len(rows[0]):
                raise ValueError(f"{name} row {p} has {len(row)} entries, expected "
                                 f"{len(rows[0])} (the length of row 0)")
            check_int_list(f"{name}[{p}]", row, -2 ** 15, 2 ** 15 - 1)
        return tuple(tuple(int(v) for v in row) for row in rows)

    @property
    def n(self):
        return self._n

    @property
    def head_dim(self):
        return 2 * self._half

    @property
    def n_heads(self):
        return self._n_heads

    @property
    def context(self):
        return self._context

    @property
    def pairing(self):
        return self._pairing

    @property
    def rom(self):
        """``(C, S)`` words, address ``pos * ceil((head_dim/2) / pairs_per_head) + chunk``."""
        return self._rom

    def _pair_elements(self, head, j):
        base = head * 2 * self._half
        if self._pairing == "half":
            return base + j, base + j + self._half
        return base + 2 * j, base + 2 * j + 1

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        # RUN: cycles 0..slots-1 read the table for slot `count`; 1..slots form slot count-1's
        # sums of products; 2..slots+1 round them into the result.
        seq = Sequencer(m, self.i, self.o, plan.slots + 2)
        issue, finish = Signal(), Signal()
        m.d.comb += [issue.eq(seq.running & (seq.count < plan.slots)),
                     finish.eq(seq.running & (seq.count > 1))]
        v = self.i.payload.v
        a_regs = slot_registers(m, plan, signed(8), lambda p: v[self._pair_elements(*p)[0]],
                                name="a", load=seq.start, shift=issue)
        b_regs = slot_registers(m, plan, signed(8), lambda p: v[self._pair_elements(*p)[1]],
                                name="b", load=seq.start, shift=issue)

        cps = plan.chunks_per_segment
        pos = Signal.like(self.i.payload.pos)
        chunk = Signal(range(max(2, cps)))
        with m.If(seq.start):
            m.d.sync += [pos.eq(self.i.payload.pos), chunk.eq(0)]
        with m.Elif(issue):
            m.d.sync += chunk.eq(Mux(chunk == cps - 1, 0, chunk + 1))

        m.submodules.table = table = Memory(data=self._rom)
        port = table.read_port()
        m.d.comb += [port.addr.eq(pos * cps + chunk), port.en.eq(issue)]

        new_a, new_b = [], []
        for lane in range(plan.lanes):
            a = Signal(signed(8), name=f"a_lane{lane}")     # aligned with the table read
            b = Signal(signed(8), name=f"b_lane{lane}")
            m.d.sync += [a.eq(a_regs[0][lane]), b.eq(b_regs[0][lane])]
            entry = port.data[lane % plan.per_segment]
            sum_a = Signal(signed(25), name=f"sum_a{lane}")
            sum_b = Signal(signed(25), name=f"sum_b{lane}")
            m.d.sync += [sum_a.eq(a * entry.cos - b * entry.sin),
                         sum_b.eq(a * entry.sin + b * entry.cos)]
            new_a.append(saturate(rshift_round_const(sum_a, ROPE_FRAC), 8))
            new_b.append(saturate(rshift_round_const(sum_b, ROPE_FRAC), 8))
        out_a = collect_slots(m, plan, signed(8), new_a, name="a_out", shift=finish)
        out_b = collect_slots(m, plan, signed(8), new_b, name="b_out", shift=finish)
        for s in range(plan.slots):
            for lane in range(plan.lanes):
                if (place := plan.place(s, lane)) is not None:
                    ia, ib = self._pair_elements(*place)
                    m.d.comb += [self.o.payload[ia].eq(out_a[s][lane]),
                                 self.o.payload[ib].eq(out_b[s][lane])]
        return m
