"""Amaranth-simulator harness shared by the vector-unit tests (RMSNorm, RoPE, SwiGLU, ...)."""

import random

from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hardwire.hdl.stream_sim import random_pauses, stream_get_all, stream_monitor, stream_put_all

__all__ = ["run_unit", "to_list", "elaborate", "PAUSES"]

# (input idle probability, output backpressure probability): none, idle, backpressure, both.
PAUSES = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.4, 0.4)]


def to_list(const):
    """A simulator value of an ``ArrayLayout`` as a list of Python ints."""
    return [int(const[k]) for k in range(const.shape().length)]


def elaborate(dut):
    """Elaborate ``dut`` (checks it builds; also marks it used) and return it."""
    Fragment.get(dut, None)
    return dut


def run_unit(dut, payloads, *, pauses=(0.0, 0.0), seed=0, convert=to_list, banks=None,
             bank_after_input=False):
    """Push ``payloads`` through ``dut.i``, read as many results from ``dut.o``.

    With ``banks`` (one bank per payload), ``dut.bank`` is ``banks[k]`` from when result
    ``k - 1`` is offered (the earliest vector ``k`` can be taken) until result ``k`` has left;
    with ``bank_after_input`` only in the cycle after vector ``k``'s input transfer, and another
    bank in every other cycle.

    Returns ``(results, in_cycles, out_cycles)``: ``convert``-ed outputs and the cycle of every
    transfer on ``i`` and ``o`` (one time base), so tests can check latency and throughput.
    """
    rng = random.Random(seed)
    idle, stall = pauses
    put_pause = random_pauses(rng, idle) if idle else None
    get_pause = random_pauses(rng, stall) if stall else None
    ins, outs, results = [], [], []

    async def monitor_in(ctx):
        await stream_monitor(ctx, dut.i, ins)

    async def monitor_out(ctx):
        await stream_monitor(ctx, dut.o, outs)

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, payloads, pause=put_pause)

    async def consumer(ctx):
        results.extend(convert(v) for v in
                       await stream_get_all(ctx, dut.o, len(payloads), pause=get_pause))

    async def bank_driver(ctx):
        left = 0
        ctx.set(dut.bank, banks[0])
        while left < len(banks):
            _, _, valid, ready = await ctx.tick().sample(dut.o.valid, dut.o.ready)
            left += bool(valid and ready)
            ctx.set(dut.bank, banks[min(left + ctx.get(dut.o.valid), len(banks) - 1)])

    async def bank_after_input_driver(ctx):
        taken, n = 0, dut.banks
        ctx.set(dut.bank, (banks[0] + 1) % n)
        while taken < len(banks):
            _, _, valid, ready = await ctx.tick().sample(dut.i.valid, dut.i.ready)
            if valid and ready:
                ctx.set(dut.bank, banks[taken])
                taken += 1
            else:
                ctx.set(dut.bank, (banks[min(taken, len(banks) - 1)] + 1) % n)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(monitor_in)
    sim.add_process(monitor_out)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    if banks is not None:
        sim.add_testbench(bank_after_input_driver if bank_after_input else bank_driver)
    sim.run()
    return results, [c for c, _ in ins], [c for c, _ in outs]
