"""Greedy decoding: the index of the largest int16 logit, lowest index on ties."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from .vector_unit import LanePlan, Sequencer, VectorUnit, check_int, slot_registers

__all__ = ["Argmax"]


def _best(pairs):
    # Tournament over (value, index) pairs in index order: the right side wins only when strictly
    # larger, so equal values keep the lower index.
    while len(pairs) > 1:
        merged = []
        for k in range(0, len(pairs) - 1, 2):
            (lv, li), (rv, ri) = pairs[k], pairs[k + 1]
            right = rv > lv
            merged.append((Mux(right, rv, lv), Mux(right, ri, li)))
        if len(pairs) % 2:
            merged.append(pairs[-1])
        pairs = merged
    return pairs[0]


class Argmax(VectorUnit):
    """``token = argmax(logits)`` of ``docs/numerics.md``: the lowest index wins ties.

    Parameters
    ----------
    n : int
        Number of logits (the vocabulary size), ``>= 1``.
    lanes : int
        Logits compared per cycle, ``1..n`` (a comparator tree of ``lanes`` leaves).

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(signed(16), n)))``
        The logits, latched on transfer.
    o : ``Out(stream.Signature(unsigned(max(1, bit_length(n - 1)))))``
        The token id.

    Timing
    ------
    ``latency = cycles_per_vector = ceil(n / lanes) + 1`` clock edges from the input transfer to
    the output transfer (``o`` always ready), and between input transfers.
    """
    EXTRA_CYCLES = 1

    def __init__(self, *, n, lanes):
        self._n = check_int("n", n, 1, None)
        self._lanes = check_int("lanes", lanes, 1, self._n)
        self._plan = LanePlan(segments=1, length=self._n, lanes=self._lanes)
        self._id_bits = max(1, (self._n - 1).bit_length())
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(16), self._n))),
            "o": Out(stream.Signature(unsigned(self._id_bits))),
        })

    @property
    def n(self):
        return self._n

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        seq = Sequencer(m, self.i, self.o, plan.slots)
        # Padding lanes hold the smallest value: they can only tie, and ties go to lower indices.
        xs = slot_registers(m, plan, signed(16), lambda p: self.i.payload[p[1]], name="logit",
                            load=seq.start, shift=seq.running, pad=-2 ** 15)
        base = Signal(range(plan.slots * plan.lanes), name="base")
        best_value = Signal(signed(16))
        best_index = Signal(unsigned(self._id_bits))
        value, index = _best([(xs[0][lane], base + lane) for lane in range(plan.lanes)])
        with m.If(seq.start):
            m.d.sync += [base.eq(0), best_value.eq(-2 ** 15), best_index.eq(0)]
        with m.Elif(seq.running):
            m.d.sync += base.eq(base + plan.lanes)
            # Earlier slots hold lower indices: a later slot must be strictly larger to win.
            with m.If(value > best_value):
                m.d.sync += [best_value.eq(value), best_index.eq(index)]
        m.d.comb += self.o.payload.eq(best_index)
        return m
