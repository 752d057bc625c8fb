"""The serial engine's multi-cycle arithmetic: a shift-add multiplier and a restoring reciprocal."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SeqMul", "Reciprocal"]


class SeqMul(wiring.Component):
    """``p = a * b`` for an ``n``-bit two's complement ``b`` (``n`` given with ``start``), one bit
    of ``b`` per cycle from the top (Horner: ``p = 2 p ± a``, the sign bit subtracting).

    ``p`` is kept modulo ``2^p_bits``: exact whenever the true product fits, which
    ``docs/numerics.md`` bounds for every use. Latency: ``busy`` is high for the ``n`` cycles
    after the ``start`` cycle; ``p`` holds the product from the cycle ``busy`` falls.
    """

    def __init__(self, *, a_bits=48, b_bits=28, p_bits=64):
        self._b_bits = b_bits
        super().__init__({
            "start": In(1),
            "a": In(signed(a_bits)),
            "b": In(signed(b_bits)),
            "n": In(range(b_bits + 1)),
            "busy": Out(1),
            "p": Out(signed(p_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        a = Signal.like(self.a)
        neg_a = Signal(signed(len(self.a) + 1))    # -a, ready before the sign bit needs it
        bits = Signal(self._b_bits)            # b's remaining bits, the next one on top
        left = Signal(range(self._b_bits + 1))
        first = Signal()
        skip = Signal(range(self._b_bits + 1))     # b's unused top bits
        m.d.comb += [self.busy.eq(left != 0), skip.eq(self._b_bits - self.n)]
        with m.If(self.start):
            m.d.sync += [a.eq(self.a), neg_a.eq(-self.a), bits.eq(self.b.as_unsigned() << skip),
                         left.eq(self.n), first.eq(1), self.p.eq(0)]
        with m.Elif(self.busy):
            term = Mux(bits[-1], Mux(first, neg_a, a), 0)
            m.d.sync += [self.p.eq((self.p << 1) + term), bits.eq(bits << 1),
                         left.eq(left - 1), first.eq(0)]
        return m


class Reciprocal(wiring.Component):
    """``q = floor(2^k / d)`` for ``d >= 1`` by restoring division, one quotient bit per cycle.

    Latency: ``busy`` is high for the ``k + 1`` cycles after the ``start`` cycle; ``q`` holds the
    quotient from the cycle ``busy`` falls.
    """

    def __init__(self, *, k, d_bits):
        self._k = k
        super().__init__({
            "start": In(1),
            "d": In(unsigned(d_bits)),
            "busy": Out(1),
            "q": Out(unsigned(k + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        d = Signal.like(self.d)
        rem = Signal(len(self.d) + 1)
        left = Signal(range(self._k + 2))
        first = Signal()                        # the numerator's only set bit comes first
        m.d.comb += self.busy.eq(left != 0)
        with m.If(self.start):
            m.d.sync += [d.eq(self.d), rem.eq(0), left.eq(self._k + 1), first.eq(1),
                         self.q.eq(0)]
        with m.Elif(self.busy):
            shifted = Signal(len(rem) + 1)
            m.d.comb += shifted.eq((rem << 1) | first)
            fits = shifted >= d
            m.d.sync += [rem.eq(Mux(fits, shifted - d, shifted)), self.q.eq((self.q << 1) | fits),
                         left.eq(left - 1), first.eq(0)]
        return m
