"""Bench-side helpers for cocotb benches of stream components (imported inside the simulator).

A bench reads its parameters with :func:`params`, starts the clock and reset with
:func:`start`, moves data through the design with :func:`exchange` and reports measurements with
:func:`write_result`; :func:`hardwire.sim.verilator.run_bench` is the pytest side.

Amaranth flattens a stream port ``i`` to ``i__payload``, ``i__valid`` and ``i__ready`` and adds
``clk`` and a synchronous active-high ``rst``.
"""

import itertools
import json
import os
import random

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hardwire.hdl.stream_sim import random_pauses
from hardwire.sim.verilator import PARAMS_ENV, RESULT_ENV

__all__ = ["params", "write_result", "pauses", "start", "exchange", "Exchange"]


def params():
    """The parameter object :func:`~hardwire.sim.verilator.run_bench` passed to this run."""
    with open(os.environ[PARAMS_ENV]) as file:
        return json.load(file)


def write_result(result):
    """Send a JSON-serializable object back; ``run_bench`` returns it."""
    with open(os.environ[RESULT_ENV], "w") as file:
        json.dump(result, file)


def pauses(spec):
    """A pause iterator (see :mod:`hardwire.hdl.stream_sim`) from a JSON-friendly spec.

    ``None`` → no pauses; ``{"pattern": [1, 1, 1, 0]}`` → that pattern repeated;
    ``{"probability": p, "seed": s}`` → random pauses with probability ``p`` from
    ``random.Random(s)``.
    """
    if spec is None:
        return None
    if "pattern" in spec:
        return itertools.cycle([bool(p) for p in spec["pattern"]])
    return random_pauses(random.Random(spec["seed"]), spec["probability"])


async def start(dut, *, reset_cycles=2, period_ns=10):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``reset_cycles`` rising edges; returns at a
    falling edge with reset low."""
    Clock(dut.clk, period_ns, unit="ns").start()
    dut.rst.value = 1
    for _ in range(reset_cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class Exchange:
    """What :func:`exchange` observed: the output payloads (``LogicArray``) in order, and the
    cycle of every input and output transfer (cycle ``k`` is the ``k``-th rising edge after
    :func:`exchange` started), and any payload that came out after the expected ones."""

    def __init__(self):
        self.outputs = []
        self.input_cycles = []
        self.output_cycles = []
        self.extra_outputs = []


async def exchange(dut, *, inputs, n_outputs, source="i", sink="o", source_pause=None,
                   sink_pause=None, max_cycles=1_000_000, drain_cycles=8):
    """Send ``inputs`` (integers, the packed payload bits) into stream ``source`` while
    receiving ``n_outputs`` payloads from stream ``sink``; returns an :class:`Exchange`.

    One coroutine does both sides with two triggers per cycle: at the falling edge it sets
    ``valid``/``payload``/``ready`` for the coming rising edge, then at ``ReadOnly`` it reads the
    settled handshake signals, which are exactly what that rising edge will see. The producer
    consults ``source_pause`` only before raising ``valid`` and never drops ``valid`` before the
    transfer; ``sink_pause`` drops ``ready`` in paused cycles. Raises ``AssertionError`` after
    ``max_cycles`` cycles without finishing. Afterwards ``ready`` stays high for
    ``drain_cycles`` more cycles and anything transferred then lands in ``extra_outputs``.
    """
    i_valid = getattr(dut, f"{source}__valid")
    i_ready = getattr(dut, f"{source}__ready")
    i_payload = getattr(dut, f"{source}__payload")
    o_valid = getattr(dut, f"{sink}__valid")
    o_ready = getattr(dut, f"{sink}__ready")
    o_payload = getattr(dut, f"{sink}__payload")

    seen = Exchange()
    sent, offering = 0, False
    for cycle in range(max_cycles):
        if sent == len(inputs) and len(seen.outputs) == n_outputs:
            break
        await FallingEdge(dut.clk)
        if not offering and sent < len(inputs) and not (source_pause and next(source_pause)):
            i_payload.value = inputs[sent]
            offering = True
        i_valid.value = int(offering)
        ready = not (sink_pause and next(sink_pause))
        o_ready.value = int(ready)
        await ReadOnly()
        if offering and i_ready.value:
            seen.input_cycles.append(cycle)
            sent += 1
            offering = False
        if ready and o_valid.value:
            seen.outputs.append(o_payload.value)
            seen.output_cycles.append(cycle)
    else:
        raise AssertionError(f"exchange did not finish in {max_cycles} cycles: "
                             f"{sent}/{len(inputs)} inputs sent, "
                             f"{len(seen.outputs)}/{n_outputs} outputs received")
    for _ in range(drain_cycles):
        await FallingEdge(dut.clk)
        i_valid.value = 0
        o_ready.value = 1
        await ReadOnly()
        if o_valid.value:
            seen.extra_outputs.append(o_payload.value)
    await FallingEdge(dut.clk)
    o_ready.value = 0
    return seen

