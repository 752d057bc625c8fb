"""SwiGLU activation: ``hid = requant(SILU[gate + 128] * up, M_h, s_h, 8)`` over int8 vectors."""

from amaranth.hdl import Module, Signal, signed
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

__all__ = ["SwiGLU"]


class SwiGLU(VectorUnit):
    """SwiGLU product of ``docs/numerics.md``: ``out[k] = sat_8(rshift_round(SILU[gate[k] + 128]
    * up[k] * M, s))``.

    Parameters
    ----------
    n : int
        Vector length (the FFN hidden size), ``>= 1``.
    silu_table : list of int
        The layer's 256-entry ``SILU`` table, int8 values; a ROM with one read port per lane.
    M, s : int
        The requantization multiplier ``M`` in ``0..2^15-1`` and shift ``s`` in ``1..62``.
    lanes : int
        Elements per cycle, ``1..n``.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"gate": ArrayLayout(signed(8), n),
    "up": ArrayLayout(signed(8), n)})))``
        Both matmul outputs in one transfer; latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), n)))``

    Timing
    ------
    ``latency = cycles_per_vector = ceil(n / lanes) + 2`` clock edges from the input transfer to
    the output transfer (``o`` always ready), and between input transfers (one extra cycle for
    the synchronous table read).
    """
    EXTRA_CYCLES = 2

    def __init__(self, *, n, silu_table, M, s, lanes):
        self._n = check_int("n", n, 1, None)
        self._table = check_int_list("silu_table", silu_table, -128, 127, length=256)
        self._M = check_int("M", M, 0, 2 ** 15 - 1)
        self._s = check_int("s", s, 1, 62)
        self._lanes = check_int("lanes", lanes, 1, self._n)
        self._plan = LanePlan(segments=1, length=self._n, lanes=self._lanes)
        self._rom = MemoryData(shape=signed(8), depth=256, init=self._table)
        vec = data.ArrayLayout(signed(8), self._n)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"gate": vec, "up": vec}))),
            "o": Out(stream.Signature(vec)),
        })

    @property
    def n(self):
        return self._n

    @property
    def silu_table(self):
        return self._table

    @property
    def rom(self):
        """The SILU table (:class:`MemoryData`), inspectable before elaboration."""
        return self._rom

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        # RUN: cycles 0..slots-1 look up slot `count`; cycles 1..slots finish slot `count - 1`.
        seq = Sequencer(m, self.i, self.o, plan.slots + 1)
        issue = Signal()
        finish = Signal()
        m.d.comb += [issue.eq(seq.running & (seq.count < plan.slots)),
                     finish.eq(seq.running & (seq.count > 0))]
        gates = slot_registers(m, plan, signed(8), lambda p: self.i.payload.gate[p[1]],
                               name="gate", load=seq.start, shift=issue)
        ups = slot_registers(m, plan, signed(8), lambda p: self.i.payload.up[p[1]], name="up",
                             load=seq.start, shift=issue)

        m.submodules.silu = rom = Memory(data=self._rom)
        results = []
        for lane in range(plan.lanes):
            port = rom.read_port()
            up = Signal(signed(8), name=f"up_lane{lane}")      # aligned with the table read
            m.d.comb += port.addr.eq(gates[0][lane].as_unsigned() ^ 0x80)   # gate + 128
            m.d.sync += up.eq(ups[0][lane])
            product = port.data * up * self._M
            results.append(saturate(rshift_round_const(product, self._s), 8))
        out = collect_slots(m, plan, signed(8), results, name="hid", shift=finish)
        for s in range(plan.slots):
            for lane in range(plan.lanes):
                if (place := plan.place(s, lane)) is not None:
                    m.d.comb += self.o.payload[place[1]].eq(out[s][lane])
        return m
