"""Shared pieces of the whole-vector units (RMSNorm, RoPE, SwiGLU, residual add, argmax, embedding).

Each of those units takes one whole vector per ``lib.stream`` transfer, walks over it ``lanes``
elements a cycle and hands one whole vector (or a scalar) on. This module holds what they share:
parameter checks with exact messages, the integer operations of ``docs/numerics.md`` on Amaranth
values, the :class:`LanePlan` that decides which elements go through which lane in which cycle,
and the small sequencer and shift registers every unit is built from.
"""

import operator

from amaranth.hdl import Mux, Signal
from amaranth.lib import data, wiring

__all__ = ["check_int", "check_int_list", "saturate", "rshift_round_const", "rshift_round_var",
           "adder_tree", "LanePlan", "Sequencer", "slot_registers", "collect_slots",
           "VectorUnit", "check_per_bank", "shown_per_bank", "bank_select"]


def check_int(name, value, lo, hi):
    """``value`` as an ``int`` in ``lo..hi`` (``hi=None``: unbounded); ``TypeError``/``ValueError``
    naming ``name`` otherwise."""
    rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer {rng}, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer {rng}, not {value!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer {rng}, not {value!r}")
    return value


def check_int_list(name, values, lo, hi, *, length=None):
    """``values`` as a tuple of ints in ``lo..hi`` (optionally of exactly ``length`` items)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a list of integers, not {values!r}")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list of integers, not {values!r}") from None
    if length is not None and len(items) != length:
        raise ValueError(f"{name} must have {length} entries, not {len(items)}")
    if not items:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_int(f"{name}[{k}]", v, lo, hi) for k, v in enumerate(items))


def check_per_bank(name, value, lo, hi, banks):
    """A per-bank scalar: one int in ``lo..hi`` shared by all ``banks`` banks, or a sequence of
    exactly ``banks`` such ints; returned as a tuple of ``banks`` ints either way."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return (check_int(name, value, lo, hi),) * banks
    return check_int_list(name, value, lo, hi, length=banks)


def shown_per_bank(values):
    """A per-bank scalar as the units' properties show it: the int with one bank, the tuple of
    ``banks`` ints otherwise."""
    return values[0] if len(values) == 1 else values


def bank_select(m, bank, values, shape, *, name):
    """``values[bank]``: the plain ``int`` when every bank has the same value (no hardware, and
    ``bank`` may be ``None``), otherwise a combinational ``shape`` signal from a small mux."""
    if len(set(values)) == 1:
        return values[0]
    selected = Signal(shape, name=name)
    with m.Switch(bank):
        for b, value in enumerate(values):
            with m.Case(b):
                m.d.comb += selected.eq(value)
    return selected


def saturate(value, bits):
    """``sat_b``: ``value`` clamped to the signed ``bits``-bit range, as ``signed(bits)``."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(value > hi, hi, Mux(value < lo, lo, value))[:bits].as_signed()


def rshift_round_const(value, shift):
    """``rshift_round(value, shift)`` for a constant ``shift >= 1``: ``(value + 2^(s-1)) >> s``."""
    return (value + (1 << (shift - 1))) >> shift


def rshift_round_var(value, shift_minus_one):
    """``rshift_round(value, s)`` for a run-time ``s = shift_minus_one + 1 >= 1``.

    ``floor((v + 2^(s-1)) / 2^s) == floor((floor(v / 2^(s-1)) + 1) / 2)``: one barrel shifter
    instead of a variable half-unit and a second barrel shifter.
    """
    return ((value >> shift_minus_one) + 1) >> 1


def adder_tree(terms):
    """Balanced sum of ``terms``: depth grows with ``log2(len(terms))``."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


class LanePlan:
    """Which element goes through which lane in which cycle ("slot").

    The vector is ``segments`` segments of ``length`` elements (heads of RoPE pairs, groups of an
    embedding row, or one segment for plain vectors). With ``lanes <= length`` a slot holds
    ``lanes`` consecutive elements of one segment (``ceil(length / lanes)`` slots per segment,
    the last one padded); with ``lanes > length`` (a multiple of ``length``) a slot holds
    ``lanes // length`` whole segments. Slots run in element order, so slot 0 lane 0 is element
    0 and a lower slot never holds a higher element.
    """

    def __init__(self, *, segments, length, lanes, what="elements"):
        self.segments, self.length, self.lanes = segments, length, lanes
        total = segments * length
        if lanes <= length:
            self.per_segment, self.segments_per_slot = lanes, 1
        elif lanes % length == 0 and lanes <= total:
            self.per_segment, self.segments_per_slot = length, lanes // length
        else:
            raise ValueError(f"lanes must be 1..{length} or a multiple of {length} up to {total} "
                             f"({what} per cycle), not {lanes!r}")
        self.chunks_per_segment = -(-length // self.per_segment)
        self.slots = -(-segments // self.segments_per_slot) * self.chunks_per_segment

    def place(self, slot, lane):
        """``(segment, offset)`` carried by ``lane`` in ``slot``, or ``None`` for padding."""
        group, chunk = divmod(slot, self.chunks_per_segment)
        sub, off = divmod(lane, self.per_segment)
        segment = group * self.segments_per_slot + sub
        offset = chunk * self.per_segment + off
        if segment < self.segments and offset < self.length:
            return segment, offset
        return None

    def chunk(self, slot):
        """Index of ``slot``'s chunk inside its segment(s)."""
        return slot % self.chunks_per_segment


class Sequencer:
    """IDLE → RUN for ``run_cycles`` cycles (``count`` = 0, 1, …) → DONE (``o.valid``) → IDLE.

    ``i.ready`` is high when idle, and in DONE while ``o.ready`` is high, so a new vector is taken
    at the clock edge where the previous result leaves. Counting clock edges from the input
    transfer to the output transfer (``o`` always ready): ``latency == cycles_per_vector ==
    run_cycles + 1``. Asserting ``skip`` in the transfer cycle goes straight to DONE: the result
    (whatever the registers hold) is offered right after the transfer edge (latency 1).
    """

    def __init__(self, m, i, o, run_cycles, *, skip=None):
        self.busy = busy = Signal()
        self.done = done = Signal()
        self.count = count = Signal(range(max(2, run_cycles)))
        m.d.comb += [i.ready.eq(~busy | (done & o.ready)), o.valid.eq(done)]
        self.start = start = Signal()
        self.running = running = Signal()
        m.d.comb += [start.eq(i.valid & i.ready), running.eq(busy & ~done)]
        with m.If(running):
            m.d.sync += count.eq(count + 1)
            with m.If(count == run_cycles - 1):
                m.d.sync += done.eq(1)
        with m.If(done & o.ready):
            m.d.sync += [busy.eq(0), done.eq(0)]
        with m.If(start):
            m.d.sync += [busy.eq(1), done.eq(0 if skip is None else skip), count.eq(0)]


def slot_registers(m, plan, shape, element, *, name, load, shift, rotate=False, pad=0):
    """Per-slot registers (``ArrayLayout(shape, lanes)`` each) loaded with ``element(place)`` for
    every non-padding lane (``pad`` elsewhere) when ``load``; moved one slot down when ``shift``
    (slot 0 is the one being worked on; with ``rotate`` slot 0 goes back to the top)."""
    regs = [Signal(data.ArrayLayout(shape, plan.lanes), name=f"{name}_slot{s}")
            for s in range(plan.slots)]
    for s, reg in enumerate(regs):
        with m.If(load):
            for lane in range(plan.lanes):
                place = plan.place(s, lane)
                m.d.sync += reg[lane].eq(pad if place is None else element(place))
        with m.Elif(shift):
            if s + 1 < plan.slots:
                m.d.sync += reg.eq(regs[s + 1])
            elif rotate:
                m.d.sync += reg.eq(regs[0])
    return regs


def collect_slots(m, plan, shape, values, *, name, shift, clear=None):
    """Per-slot result registers: when ``shift``, ``values`` (one per lane) enter the top slot and
    the others move down, so after ``plan.slots`` shifts slot ``s`` holds the ``s``-th result.
    ``clear`` (optional) zeroes them all."""
    regs = [Signal(data.ArrayLayout(shape, plan.lanes), name=f"{name}_slot{s}")
            for s in range(plan.slots)]
    if clear is not None:
        with m.If(clear):
            m.d.sync += [reg.eq(0) for reg in regs]
    with m.If(shift):
        for s in range(plan.slots - 1):
            m.d.sync += regs[s].eq(regs[s + 1])
        for lane, value in enumerate(values):
            m.d.sync += regs[-1][lane].eq(value)
    return regs


class VectorUnit(wiring.Component):
    """Base of the whole-vector units: one vector in, ``lanes`` elements a cycle, one result out.

    A subclass sets ``self._lanes`` and ``self._plan`` (a :class:`LanePlan`) and the class
    constants ``PASSES`` (walks over the vector) and ``EXTRA_CYCLES`` (fixed pipeline cycles).
    The next vector is accepted at the edge the result leaves, so both timing figures are
    ``PASSES * slots + EXTRA_CYCLES`` with ``slots = ceil(n / lanes)``.
    """
    PASSES = 1
    EXTRA_CYCLES = 1

    @property
    def lanes(self):
        return self._lanes

    @property
    def latency(self):
        """Edges from the input transfer to the output valid: ``PASSES*slots + EXTRA_CYCLES``."""
        return self.PASSES * self._plan.slots + self.EXTRA_CYCLES

    @property
    def cycles_per_vector(self):
        """Edges between input transfers when ``o`` is always ready (equal to ``latency``)."""
        return self.latency
