"""RMSNorm: int16 residual vector in, int8 normalized vector out, with a reciprocal-sqrt table."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .vector_unit import (
    LanePlan,
    Sequencer,
    VectorUnit,
    adder_tree,
    bank_select,
    check_int,
    check_int_list,
    check_per_bank,
    collect_slots,
    rshift_round_var,
    saturate,
    shown_per_bank,
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
        ``G``, one int16 per element, stacked for all banks: ``banks * d`` entries, bank ``b``'s
        ``d`` gains at ``b * d`` (any ``d >= 1``). One ROM with one word of ``lanes`` gains per
        cycle; bank ``b``'s ``ceil(d / lanes)`` words follow bank ``b - 1``'s.
    shift : int or list of int
        ``S`` in ``-15..64`` (the quantizer refuses ``S < -15``, which keeps the shift ``>= 1``):
        one for all banks or one per bank.
    eps_int : int or list of int
        ``1 <= eps_int < 2^40``: one for all banks or one per bank.
    rsqrt_table : list of int
        The 768 ``RSQRT`` entries, 16-bit unsigned, shared by all banks. A ROM read once per
        vector.
    lanes : int
        Elements per cycle, ``1..d``: ``lanes`` squarers in the sum, ``lanes`` ``x * R * G``
        products and barrel shifters in the scaling pass.
    banks : int
        Parameter banks (layers sharing this datapath), ``>= 1``. With ``banks > 1`` the shift
        ``20 + e/2 + S`` is put together in the normalizing cycle when the banks' ``S`` differ
        (still one barrel shifter per lane), and ``eps_int`` comes from a small mux when they
        differ.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(signed(16), d)))``
        Latched on transfer.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), d)))``
    bank : ``In(range(banks))``, only when ``banks > 1``
        The bank whose ``G``, ``S`` and ``eps_int`` the vector uses: read in the cycle after the
        input transfer (the first of the sum of squares) and held inside until the result is
        offered; its value in any other cycle does not matter.

    Timing
    ------
    ``latency = cycles_per_vector = 2 * ceil(d / lanes) + 5`` clock edges from the input transfer
    to the output transfer (``o`` always ready), and between input transfers: one pass for the
    sum of squares, one cycle to normalize ``u``, one to read ``RSQRT``, one scaling pass through
    a three-stage pipeline (``x * R``, ``* G``, shift and saturate: registered in between, so
    each is a cycle of its own), which adds two cycles.
    """
    PASSES = 2
    EXTRA_CYCLES = 5

    def __init__(self, *, gain, shift, eps_int, rsqrt_table, lanes, banks=1):
        self._banks = banks = check_int("banks", banks, 1, None)
        self._gain = check_int_list("gain", gain, -2 ** 15, 2 ** 15 - 1)
        if len(self._gain) % banks:
            raise ValueError(f"gain must have banks * d entries, a multiple of {banks}, "
                             f"not {len(self._gain)}")
        self._d = d = len(self._gain) // banks
        self._shifts = check_per_bank("shift", shift, -15, 64, banks)
        self._epss = check_per_bank("eps_int", eps_int, 1, 2 ** 40 - 1, banks)
        self._table = check_int_list("rsqrt_table", rsqrt_table, 0, 2 ** 16 - 1,
                                     length=RSQRT_ENTRIES)
        self._lanes = check_int("lanes", lanes, 1, d)
        self._plan = plan = LanePlan(segments=1, length=d, lanes=self._lanes)
        words = [[self._gain[b * d + p[1]] if (p := plan.place(s, lane)) else 0
                  for lane in range(plan.lanes)] for b in range(banks) for s in range(plan.slots)]
        self._gain_rom = MemoryData(shape=data.ArrayLayout(signed(16), plan.lanes),
                                    depth=banks * plan.slots, init=words)
        self._rsqrt_rom = MemoryData(shape=unsigned(16), depth=RSQRT_ENTRIES, init=self._table)
        members = {
            "i": In(stream.Signature(data.ArrayLayout(signed(16), d))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), d))),
        }
        if banks > 1:
            members["bank"] = In(range(banks))
        super().__init__(members)

    @property
    def d(self):
        """Elements per vector (per bank)."""
        return self._d

    @property
    def banks(self):
        return self._banks

    @property
    def gain(self):
        """All banks' gains, stacked (``banks * d`` ints)."""
        return self._gain

    @property
    def shift(self):
        """``S``: an int with one bank, a tuple of ``banks`` ints otherwise."""
        return shown_per_bank(self._shifts)

    @property
    def eps_int(self):
        """An int with one bank, a tuple of ``banks`` ints otherwise."""
        return shown_per_bank(self._epss)

    @property
    def rsqrt_table(self):
        return self._table

    @property
    def gain_rom(self):
        """Gains, one word of ``lanes`` per cycle, bank after bank (:class:`MemoryData`)."""
        return self._gain_rom

    @property
    def rsqrt_rom(self):
        return self._rsqrt_rom

    @property
    def sum_bits(self):
        """Width of the unsigned sum of squares ``u``: ``bit_length(d * 2^30 + max(eps_int))``."""
        return (self._d * 2 ** 30 + max(self._epss)).bit_length()

    def elaborate(self, platform):
        m = Module()
        plan, slots = self._plan, self._plan.slots
        # RUN: cycles 0..slots-1 sum squares (the slots rotate back into place), cycle `slots`
        # normalizes u, cycle slots+1 reads RSQRT; slot c = count - slots - 2 is multiplied by R
        # at count slots+2+c, by G one cycle later and shifted, saturated and collected one cycle
        # after that.
        seq = Sequencer(m, self.i, self.o, 2 * slots + 4)
        summing, normalizing, scaling, collecting = (Signal() for _ in range(4))
        m.d.comb += [
            summing.eq(seq.running & (seq.count < slots)),
            normalizing.eq(seq.running & (seq.count == slots)),
            scaling.eq(seq.running & (seq.count > slots + 1) & (seq.count <= 2 * slots + 1)),
            collecting.eq(seq.running & (seq.count > slots + 3)),
        ]
        xs = slot_registers(m, plan, signed(16), lambda p: self.i.payload[p[1]], name="x",
                            load=seq.start, shift=summing | scaling, rotate=True)

        # `bank` is read in the first summing cycle, the one after the input transfer, and held:
        # a client whose bank changes at the edge it hands the vector over (the decoder's layer
        # index as the layer output loops back) sets it in time.
        first = Signal()
        m.d.comb += first.eq(summing & (seq.count == 0))
        live = bank = None
        if self._banks > 1:
            live, bank = self.bank, Signal(range(self._banks), name="bank_held")
            with m.If(first):
                m.d.sync += bank.eq(live)
        eps = bank_select(m, live, self._epss, unsigned(40), name="eps")
        u = Signal(unsigned(self.sum_bits))
        with m.If(summing):
            m.d.sync += u.eq(Mux(first, eps, u) + adder_tree(xs[0][lane] * xs[0][lane]
                                                             for lane in range(plan.lanes)))

        # e + 8 (>= 0, even): bit_length(u) - 2, rounded up to even. u >= eps_int >= 1.
        length = Signal(range(self.sum_bits + 1))
        for bit in range(self.sum_bits):
            with m.If(u[bit]):
                m.d.comb += length.eq(bit + 1)
        e8 = Signal(range(self.sum_bits + 1))
        m.d.comb += e8.eq(length - 2 + length[0])
        # The priority encoder and the shift are a cycle of their own, before the ROM address.
        mant = Signal(10)
        with m.If(normalizing):
            m.d.sync += mant.eq((u << 8) >> e8)

        m.submodules.rsqrt = rsqrt = Memory(data=self._rsqrt_rom)
        r_port = rsqrt.read_port()
        m.d.comb += r_port.addr.eq(mant - 256)          # stable from `normalizing` + 1 on

        m.submodules.gain = gain = Memory(data=self._gain_rom)
        g_port = gain.read_port()
        # Slot c's gains are read while x * R is formed, ready for the `* G` stage.
        addr = seq.count - (slots + 2)
        if bank is not None:
            addr = bank * slots + addr
        m.d.comb += [g_port.addr.eq(addr), g_port.en.eq(scaling)]

        # Shift - 1 = 20 + e/2 + S - 1 = (15 + S) + (e + 8)/2: a constant then a variable part,
        # or, when the banks' S differ, all of it variable (added up while normalizing).
        fixed = bank_select(m, bank, [15 + s for s in self._shifts], range(80), name="fixed")
        if isinstance(fixed, int):
            e8_reg = Signal.like(e8)
            with m.If(normalizing):
                m.d.sync += e8_reg.eq(e8)
            variable = e8_reg >> 1
        else:
            variable = Signal(range(80 + self.sum_bits // 2), name="shift_m1")
            with m.If(normalizing):
                m.d.sync += variable.eq(fixed + (e8 >> 1))
            fixed = 0
        results = []
        for lane in range(plan.lanes):
            # Registers between the two multiplies and before the shift: the ROM → x * R * G →
            # barrel shift → saturate path was the design's critical path in one cycle.
            xr_value = xs[0][lane] * r_port.data
            xr = Signal(xr_value.shape(), name=f"xr_lane{lane}")
            m.d.sync += xr.eq(xr_value)
            xrg = (xr * g_port.data[lane]).shift_right(fixed)     # fixed is an int here
            scaled = Signal(xrg.shape(), name=f"xrg_lane{lane}")
            m.d.sync += scaled.eq(xrg)
            results.append(saturate(rshift_round_var(scaled, variable), 8))
        out = collect_slots(m, plan, signed(8), results, name="y", shift=collecting)
        for s in range(slots):
            for lane in range(plan.lanes):
                if (place := plan.place(s, lane)) is not None:
                    m.d.comb += self.o.payload[place[1]].eq(out[s][lane])
        return m
