"""Residual add: ``x = sat_16(x + y)`` over whole int16 vectors."""

from amaranth.hdl import Module, signed
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from .vector_unit import (
    LanePlan,
    Sequencer,
    VectorUnit,
    check_int,
    collect_slots,
    saturate,
    slot_registers,
)

__all__ = ["ResidualAdd"]


class ResidualAdd(VectorUnit):
    """Residual add of ``docs/numerics.md``: ``out[k] = sat_16(x[k] + y[k])``.

    Parameters
    ----------
    n : int
        Vector length (``>= 1``, any value).
    lanes : int
        Additions per cycle, ``1..n``.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"x": ArrayLayout(signed(16), n),
    "y": ArrayLayout(signed(16), n)})))``
        Both operands in one transfer; latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(16), n)))``
        The sum, held until taken.

    Timing
    ------
    ``latency = cycles_per_vector = ceil(n / lanes) + 1``: clock edges from the input transfer to
    the output transfer with ``o`` always ready, and between input transfers (the next vector is
    accepted at the edge where the previous result is taken).
    """
    EXTRA_CYCLES = 1

    def __init__(self, *, n, lanes):
        self._n = check_int("n", n, 1, None)
        self._lanes = check_int("lanes", lanes, 1, self._n)
        self._plan = LanePlan(segments=1, length=self._n, lanes=self._lanes)
        vec = data.ArrayLayout(signed(16), self._n)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"x": vec, "y": vec}))),
            "o": Out(stream.Signature(vec)),
        })

    @property
    def n(self):
        return self._n

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        seq = Sequencer(m, self.i, self.o, plan.slots)
        xs = slot_registers(m, plan, signed(16), lambda p: self.i.payload.x[p[1]], name="x",
                            load=seq.start, shift=seq.running)
        ys = slot_registers(m, plan, signed(16), lambda p: self.i.payload.y[p[1]], name="y",
                            load=seq.start, shift=seq.running)
        sums = [saturate(xs[0][lane] + ys[0][lane], 16) for lane in range(plan.lanes)]
        out = collect_slots(m, plan, signed(16), sums, name="sum", shift=seq.running)
        for s in range(plan.slots):
            for lane in range(plan.lanes):
                if (place := plan.place(s, lane)) is not None:
                    m.d.comb += self.o.payload[place[1]].eq(out[s][lane])
        return m
