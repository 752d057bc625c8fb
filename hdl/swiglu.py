"""SwiGLU activation: ``hid = requant(SILU[gate + 128] * up, M_h, s_h, 8)`` over int8 vectors."""

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .vector_unit import (
    LanePlan,
    Sequencer,
    VectorUnit,
    bank_select,
    check_int,
    check_int_list,
    check_per_bank,
    collect_slots,
    rshift_round_const,
    rshift_round_var,
    saturate,
    shown_per_bank,
    slot_registers,
)

__all__ = ["SwiGLU"]

READ_PORTS_PER_COPY = 2


class SwiGLU(VectorUnit):
    """SwiGLU product of ``docs/numerics.md``: ``out[k] = sat_8(rshift_round(SILU[gate[k] + 128]
    * up[k] * M, s))``.

    Parameters
    ----------
    n : int
        Vector length (the FFN hidden size), ``>= 1``.
    silu_table : list of int
        The 256-entry ``SILU`` tables of all banks, stacked (``banks * 256`` int8 values, bank
        ``b``'s at ``b * 256``), addressed by ``{bank, gate + 128}``; ``ceil(lanes / 2)``
        copies of that ROM with two read ports each (one per lane).
    M, s : int or list of int
        The requantization multiplier ``M`` in ``0..2^15-1`` and shift ``s`` in ``1..62``: one
        for all banks or one per bank (when the banks' values differ, ``M`` comes from a small
        mux and ``s`` becomes a run-time shift).
    lanes : int
        Elements per cycle, ``1..n``.
    banks : int
        Parameter banks (layers sharing this datapath), ``>= 1``.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"gate": ArrayLayout(signed(8), n),
    "up": ArrayLayout(signed(8), n)})))``
        Both matmul outputs in one transfer; latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), n)))``
    bank : ``In(range(banks))``, only when ``banks > 1``
        The bank whose table, ``M`` and ``s`` the vector uses; held stable from the input
        transfer until the output transfer: read from the input-transfer cycle until the result is
        offered, not latched (so while a result waits, ``bank`` may already be the next vector's).

    Timing
    ------
    ``latency = cycles_per_vector = ceil(n / lanes) + 3`` clock edges from the input transfer to
    the output transfer (``o`` always ready), and between input transfers: each lane is a
    three-stage pipeline (table read alongside ``up * M``; ``SILU * (up * M)``; shift and
    saturate), registered between stages.
    """
    EXTRA_CYCLES = 3

    def __init__(self, *, n, silu_table, M, s, lanes, banks=1):
        self._banks = banks = check_int("banks", banks, 1, None)
        self._n = check_int("n", n, 1, None)
        self._table = check_int_list("silu_table", silu_table, -128, 127, length=banks * 256)
        self._Ms = check_per_bank("M", M, 0, 2 ** 15 - 1, banks)
        self._ss = check_per_bank("s", s, 1, 62, banks)
        self._lanes = check_int("lanes", lanes, 1, self._n)
        self._plan = LanePlan(segments=1, length=self._n, lanes=self._lanes)
        self._rom = MemoryData(shape=signed(8), depth=banks * 256, init=self._table)
        vec = data.ArrayLayout(signed(8), self._n)
        members = {
            "i": In(stream.Signature(data.StructLayout({"gate": vec, "up": vec}))),
            "o": Out(stream.Signature(vec)),
        }
        if banks > 1:
            members["bank"] = In(range(banks))
        super().__init__(members)

    @property
    def n(self):
        return self._n

    @property
    def banks(self):
        return self._banks

    @property
    def silu_table(self):
        """All banks' tables, stacked (``banks * 256`` ints)."""
        return self._table

    @property
    def M(self):
        """An int with one bank, a tuple of ``banks`` ints otherwise."""
        return shown_per_bank(self._Ms)

    @property
    def s(self):
        """An int with one bank, a tuple of ``banks`` ints otherwise."""
        return shown_per_bank(self._ss)

    @property
    def rom(self):
        """The SILU tables, bank after bank (:class:`MemoryData`), inspectable before
        elaboration."""
        return self._rom

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        # RUN: cycles 0..slots-1 look up slot `count` and form up * M; cycles 1..slots multiply
        # slot `count - 1`; cycles 2..slots+1 shift, saturate and collect slot `count - 2`.
        seq = Sequencer(m, self.i, self.o, plan.slots + 2)
        issue = Signal()
        finish = Signal()
        m.d.comb += [issue.eq(seq.running & (seq.count < plan.slots)),
                     finish.eq(seq.running & (seq.count > 1))]
        gates = slot_registers(m, plan, signed(8), lambda p: self.i.payload.gate[p[1]],
                               name="gate", load=seq.start, shift=issue)
        ups = slot_registers(m, plan, signed(8), lambda p: self.i.payload.up[p[1]], name="up",
                             load=seq.start, shift=issue)

        bank = self.bank if self._banks > 1 else None
        M = bank_select(m, bank, self._Ms, unsigned(15), name="M")
        s_m1 = bank_select(m, bank, [s - 1 for s in self._ss], range(62), name="s_m1")
        # A copy of the table per two lanes: a block RAM has two read ports, and Yosys's
        # memory_libmap runs out of memory on one memory with a read port per lane.
        copies = []
        for k in range(-(-plan.lanes // READ_PORTS_PER_COPY)):
            copies.append(Memory(shape=self._rom.shape, depth=self._rom.depth,
                                 init=self._rom.init))
            m.submodules[f"silu{k}"] = copies[-1]
        results = []
        for lane in range(plan.lanes):
            port = copies[lane // READ_PORTS_PER_COPY].read_port()
            addr = gates[0][lane].as_unsigned() ^ 0x80          # gate + 128
            m.d.comb += port.addr.eq(addr if bank is None else Cat(addr, bank))
            # up * M is formed while the table is read, so the table output meets one multiply;
            # the product is registered before the shift and saturation.
            up_m_value = ups[0][lane] * M
            up_m = Signal(up_m_value.shape(), name=f"up_m_lane{lane}")
            m.d.sync += up_m.eq(up_m_value)
            product_value = port.data * up_m
            product = Signal(product_value.shape(), name=f"product_lane{lane}")
            m.d.sync += product.eq(product_value)
            if isinstance(s_m1, int):
                results.append(saturate(rshift_round_const(product, s_m1 + 1), 8))
            else:
                results.append(saturate(rshift_round_var(product, s_m1), 8))
        out = collect_slots(m, plan, signed(8), results, name="hid", shift=finish)
        for s in range(plan.slots):
            for lane in range(plan.lanes):
                if (place := plan.place(s, lane)) is not None:
                    m.d.comb += self.o.payload[place[1]].eq(out[s][lane])
        return m
