"""RMSNorm: int16 residual vector in, int8 normalized vector out, with a reciprocal-sqrt table."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .vector_unit import (
    LanePlan,
    Sequencer,
    VectorUnit,
    adder_tree,
    check_int,
    check_int_list,
    collect_slots,
    rshift_round_var,
    saturate,
    slot_registers,
)

__all__ = ["RMSNorm"]

RSQRT_ENTRIES = 768     # m in [256, 1024)
RSQRT_FRAC = 20         # RSQRT[j] ~ 2^20 / sqrt(256 + j + 0.5)


class RMSNorm(VectorUnit):
    """RMSNorm of ``docs/numerics.md`` with gamma kept in the norm::

        u = sum_i x[i]^2 + eps_int
        e = bit_length(u) - 10, rounded up to even;  m = u >> e (u << -e when e < 0)
        R = RSQRT[m - 256]
        y[i] = sat_8(rshift_round(x[i] * R * G[i], 20 + e/2 + S))

    Parameters
    ----------
    gain : list of int
        ``G``, one int16 per element (``d = len(gain)`` elements, any ``d >= 1``). A ROM with one
        word of ``lanes`` gains per cycle.
    shift : int
        ``S`` in ``-15..64`` (the quantizer refuses ``S < -15``, which keeps the shift ``>= 1``).
    eps_int : int
        ``1 <= eps_int < 2^40``.
    rsqrt_table : list of int
        The 768 ``RSQRT`` entries, 16-bit unsigned. A ROM read once per vector.
    lanes : int
        Elements per cycle, ``1..d``: ``lanes`` squarers in the sum, ``lanes`` ``x * R * G``
        products and barrel shifters in the scaling pass.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(signed(16), d)))``
        Latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), d)))``

    Timing
    ------
    ``latency = cycles_per_vector = 2 * ceil(d / lanes) + 2`` clock edges from the input transfer
    to the output transfer (``o`` always ready), and between input transfers: one pass for the
    sum of squares, one cycle to normalize ``u`` and read ``RSQRT``, one scaling pass.
    """
    PASSES = 2
    EXTRA_CYCLES = 2

    def __init__(self, *, gain, shift, eps_int, rsqrt_table, lanes):
        self._gain = check_int_list("gain", gain, -2 ** 15, 2 ** 15 - 1)
        self._d = d = len(self._gain)
        self._shift = check_int("shift", shift, -15, 64)
        self._eps = check_int("eps_int", eps_int, 1, 2 ** 40 - 1)
        self._table = check_int_list("rsqrt_table", rsqrt_table, 0, 2 ** 16 - 1,
                                     length=RSQRT_ENTRIES)
        self._lanes = check_int("lanes", lanes, 1, d)
        self._plan = plan = LanePlan(segments=1, length=d, lanes=self._lanes)
        words = [[self._gain[p[1]] if (p := plan.place(s, lane)) else 0
                  for lane in range(plan.lanes)] for s in range(plan.slots)]
        self._gain_rom = MemoryData(shape=data.ArrayLayout(signed(16), plan.lanes),
                                    depth=plan.slots, init=words)
        self._rsqrt_rom = MemoryData(shape=unsigned(16), depth=RSQRT_ENTRIES, init=self._table)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(16), d))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), d))),
        })

    @property
    def d(self):
        return self._d

    @property
    def gain_rom(self):
        """Gains, one word of ``lanes`` per cycle (:class:`MemoryData`)."""
        return self._gain_rom

    @property
    def rsqrt_rom(self):
        return self._rsqrt_rom

    @property
    def sum_bits(self):
        """Width of the unsigned sum of squares ``u``: ``bit_length(d * 2^30 + eps_int)``."""
        return (self._d * 2 ** 30 + self._eps).bit_length()

    def elaborate(self, platform):
        m = Module()
        plan, slots = self._plan, self._plan.slots
        # RUN: cycles 0..slots-1 sum squares (the slots rotate back into place), cycle `slots`
        # normalizes u, cycles slots+1..2*slots scale slot `count - slots - 1`.
        seq = Sequencer(m, self.i, self.o, 2 * slots + 1)
        summing, scaling, normalizing = Signal(), Signal(), Signal()
        m.d.comb += [
            summing.eq(seq.running & (seq.count < slots)),
            normalizing.eq(seq.running & (seq.count == slots)),
            scaling.eq(seq.running & (seq.count > slots)),
        ]
        xs = slot_registers(m, plan, signed(16), lambda p: self.i.payload[p[1]], name="x",
                            load=seq.start, shift=summing | scaling, rotate=True)

        u = Signal(unsigned(self.sum_bits))
        with m.If(seq.start):
            m.d.sync += u.eq(self._eps)
        with m.Elif(summing):
            m.d.sync += u.eq(u + adder_tree(xs[0][lane] * xs[0][lane]
                                            for lane in range(plan.lanes)))

        # e + 8 (>= 0, even): bit_length(u) - 2, rounded up to even. u >= eps_int >= 1.
        length = Signal(range(self.sum_bits + 1))
        for bit in range(self.sum_bits):
            with m.If(u[bit]):
                m.d.comb += length.eq(bit + 1)
        e8 = Signal(range(self.sum_bits + 1))
        m.d.comb += e8.eq(length - 2 + length[0])
        mant = Signal(10)
        m.d.comb += mant.eq((u << 8) >> e8)
        e8_reg = Signal.like(e8)
        with m.If(normalizing):
            m.d.sync += e8_reg.eq(e8)

        m.submodules.rsqrt = rsqrt = Memory(data=self._rsqrt_rom)
        r_port = rsqrt.read_port()
        m.d.comb += r_port.addr.eq(mant - 256)          # stable from `normalizing` on

        m.submodules.gain = gain = Memory(data=self._gain_rom)
        g_port = gain.read_port()
        # Slot c is read one cycle before it is used; no read past the last slot.
        m.d.comb += [g_port.addr.eq(seq.count - slots),
                     g_port.en.eq(normalizing | (scaling & (seq.count < 2 * slots)))]

        # Shift - 1 = 20 + e/2 + S - 1 = (15 + S) + (e + 8)/2: a constant then a variable part.
        results = []
        for lane in range(plan.lanes):
            product = xs[0][lane] * r_port.data * g_port.data[lane]
            results.append(saturate(rshift_round_var(product >> (15 + self._shift),
                                                     e8_reg >> 1), 8))
        out = collect_slots(m, plan, signed(8), results, name="y", shift=scaling)
        for s in range(slots):
            for lane in range(plan.lanes):
                if (place := plan.place(s, lane)) is not None:
                    m.d.comb += self.o.payload[place[1]].eq(out[s][lane])
        return m
