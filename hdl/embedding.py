"""Token embedding: a ROM of integer table rows scaled into the int16 residual stream."""

from amaranth.hdl import Module, Shape, Signal, signed, unsigned
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
    rshift_round_var,
    saturate,
)

__all__ = ["Embedding"]

GROUP_MULT_MAX = 2 ** 14


def _signed_bits(value):
    return (value if value >= 0 else -value - 1).bit_length() + 1


class Embedding(VectorUnit):
    """Embedding of ``docs/numerics.md``: token ``t`` in, ``x[i] = requant(w[t, i] * g[t, i // G],
    M[t], s[t], 16)`` out (per-row scales: ``w[t, i]`` alone).

    Parameters
    ----------
    table : list of list of int
        ``vocab`` rows of ``d`` integers in ``-128..127`` (int8, int4 or ternary values; the ROM
        word width follows the widest value: 2 bits for ternary, 4 for int4, 8 for int8).
    M, s : list of int
        Per-token multiplier (``0..2^15-1``) and shift (``1..62``), in a ROM of ``vocab`` words.
    group_mult : list of list of int, optional
        ``[vocab][ceil(d / group_size)]`` signed group multipliers in ``-2^14..2^14`` (GGUF
        Q4_0/Q5_0 carry negative block scales); needs ``group_size``. Stored in the table words
        as ``signed(16)``, one per group in the word.
    group_size : int, optional
        ``G``; the last group may be shorter.
    lanes : int
        Elements per cycle: ``1..d`` per row (``1..G`` or a multiple of ``G`` up to
        ``ceil(d / G) * G`` with groups, so a cycle never splits a group across two words
        unevenly).

    Members
    -------
    i : ``In(stream.Signature(unsigned(bit_length(vocab - 1))))``
        The token id, latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(16), d)))``
    error : ``Out(1)``
        Sticky (until reset): a token id ``>= vocab`` arrived. Such an id never addresses the
        ROM; it produces an all-zero vector at the next edge so the stream stays in step (the top
        level refuses bad ids before they get here). Constant 0 when ``vocab`` is a power of two.

    Timing
    ------
    ``slots = ceil(d / lanes)`` (per-row), ``ceil(n_groups / groups_per_cycle) *
    ceil(G / lanes_per_group)`` (grouped). ``latency = cycles_per_vector = slots + 4`` clock edges
    from the input transfer to the output transfer (``o`` always ready), and between input
    transfers; a bad id takes 1. The ROM read, a register of the word, the products and the
    rounded results each have a cycle of their own: a block RAM's output goes only into a
    register (it was the critical path of the 64-lane ULX3S build when it fed the multipliers).
    """
    EXTRA_CYCLES = 4

    def __init__(self, *, table, M, s, lanes, group_mult=None, group_size=None):
        rows = self._check_table(table)
        self._vocab, self._d = len(rows), len(rows[0])
        self._M = check_int_list("M", M, 0, 2 ** 15 - 1, length=self._vocab)
        self._s = check_int_list("s", s, 1, 62, length=self._vocab)
        if (group_mult is None) != (group_size is None):
            raise ValueError("group_mult and group_size must be given together")
        self._grouped = group_mult is not None
        if self._grouped:
            self._group_size = check_int("group_size", group_size, 1, self._d)
            n_groups = -(-self._d // self._group_size)
            try:
                g_rows = [list(row) for row in group_mult]
            except TypeError:
                raise TypeError(f"group_mult must be a list of rows of integers, not "
                                f"{group_mult!r}") from None
            if len(g_rows) != self._vocab:
                raise ValueError(f"group_mult must have {self._vocab} rows, not {len(g_rows)}")
            self._group_mult = tuple(
                check_int_list(f"group_mult[{t}]", row, -GROUP_MULT_MAX, GROUP_MULT_MAX,
                               length=n_groups)
                for t, row in enumerate(g_rows))
            self._lanes = check_int("lanes", lanes, 1, n_groups * self._group_size)
            plan = LanePlan(segments=n_groups, length=self._group_size, lanes=self._lanes)
        else:
            self._group_size, self._group_mult = None, None
            self._lanes = check_int("lanes", lanes, 1, self._d)
            plan = LanePlan(segments=1, length=self._d, lanes=self._lanes)
        self._plan = plan
        self._table = tuple(tuple(row) for row in rows)
        self._weight_bits = max(2, max(_signed_bits(v) for row in rows for v in row))

        w_layout = data.ArrayLayout(signed(self._weight_bits), plan.lanes)
        if self._grouped:
            self._word = data.StructLayout({
                "w": w_layout,
                "g": data.ArrayLayout(signed(16), plan.segments_per_slot)})
        else:
            self._word = w_layout
        words = [self._word_init(t, slot) for t in range(self._vocab) for slot in range(plan.slots)]
        self._rom = MemoryData(shape=self._word, depth=len(words), init=words)
        self._scale_rom = MemoryData(
            shape=data.StructLayout({"M": unsigned(15), "s": unsigned(6)}), depth=self._vocab,
            init=[{"M": M_, "s": s_} for M_, s_ in zip(self._M, self._s, strict=True)])
        self._id_bits = max(1, (self._vocab - 1).bit_length())
        super().__init__({
            "i": In(stream.Signature(unsigned(self._id_bits))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(16), self._d))),
            "error": Out(1),
        })

    @staticmethod
    def _check_table(table):
        try:
            rows = [list(row) for row in table]
        except TypeError:
            raise TypeError(f"table must be a list of rows of integers, not {table!r}") from None
        if not rows or not rows[0]:
            raise ValueError("table must have at least one row and one column")
        for t, row in enumerate(rows):
            if len(row) != len(rows[0]):
                raise ValueError(f"table row {t} has {len(row)} columns, expected "
                                 f"{len(rows[0])} (the length of row 0)")
            rows[t] = list(check_int_list(f"table[{t}]", row, -128, 127))
        return rows

    def _element(self, place):
        segment, offset = place
        if self._grouped:
            k = segment * self._group_size + offset
            return k if k < self._d else None
        return offset

    def _word_init(self, token, slot):
        plan = self._plan
        ws = []
        for lane in range(plan.lanes):
            place = plan.place(slot, lane)
            k = None if place is None else self._element(place)
            ws.append(0 if k is None else self._table[token][k])
        if not self._grouped:
            return ws
        n_groups = len(self._group_mult[token])
        first = (slot // plan.chunks_per_segment) * plan.segments_per_slot
        gs = [self._group_mult[token][first + k] if first + k < n_groups else 0
              for k in range(plan.segments_per_slot)]
        return {"w": ws, "g": gs}

    @property
    def vocab(self):
        return self._vocab

    @property
    def d(self):
        return self._d

    @property
    def weight_bits(self):
        """Signed width of one table entry in the ROM (2, 4, 8 or in between)."""
        return self._weight_bits

    @property
    def rom(self):
        """Table words: address ``token * slots + slot`` (:class:`MemoryData`)."""
        return self._rom

    @property
    def scale_rom(self):
        """Per-token ``(M, s)`` (:class:`MemoryData`)."""
        return self._scale_rom

    @property
    def rom_bits(self):
        """Bits in both ROMs, padding included."""
        return self._rom.depth * Shape.cast(self._word).width + self._vocab * 21

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        bad = Signal()
        m.d.comb += bad.eq(self.i.payload >= self._vocab)
        # RUN: cycles 0..slots-1 read word `count`; 1..slots register it; 2..slots+1 multiply
        # slot `count - 2`; 3..slots+2 round and saturate slot `count - 3` into the result.
        seq = Sequencer(m, self.i, self.o, plan.slots + 3, skip=bad)
        issue, finish = Signal(), Signal()
        m.d.comb += [issue.eq(seq.running & (seq.count < plan.slots)),
                     finish.eq(seq.running & (seq.count > 2))]

        token = Signal(unsigned(self._id_bits))
        with m.If(seq.start):
            m.d.sync += token.eq(self.i.payload)
            with m.If(bad):
                m.d.sync += self.error.eq(1)

        m.submodules.table = table = Memory(data=self._rom)
        word = table.read_port()
        m.d.comb += [word.addr.eq(token * plan.slots + seq.count), word.en.eq(issue)]
        m.submodules.scale = scale_rom = Memory(data=self._scale_rom)
        scale = scale_rom.read_port()
        m.d.comb += [scale.addr.eq(token), scale.en.eq(issue)]

        # The block RAMs' outputs go straight into registers placed beside them.
        entry = Signal(self._word, name="entry")
        gain = Signal.like(scale.data, name="gain")
        m.d.sync += [entry.eq(word.data), gain.eq(scale.data)]
        shift_minus_one = Signal(6)
        m.d.sync += shift_minus_one.eq((gain.s - 1)[:6])
        results = []
        for lane in range(plan.lanes):
            if self._grouped:
                value = entry.w[lane] * entry.g[lane // plan.per_segment] * gain.M
            else:
                value = entry[lane] * gain.M
            product = Signal(value.shape(), name=f"product{lane}")
            m.d.sync += product.eq(value)
            results.append(saturate(rshift_round_var(product, shift_minus_one), 16))
        out = collect_slots(m, plan, signed(16), results, name="x", shift=finish,
                            clear=seq.start & bad)
        for s in range(plan.slots):
            for lane in range(plan.lanes):
                place = plan.place(s, lane)
                if place is not None and (k := self._element(place)) is not None:
                    m.d.comb += self.o.payload[k].eq(out[s][lane])
        return m
