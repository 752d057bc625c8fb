import itertools
import random

import pytest
from amaranth import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hardwire.hdl.stream_sim import (
    random_pauses,
    stream_check,
    stream_get,
    stream_get_all,
    stream_monitor,
    stream_put,
    stream_put_all,
    watchdog,
)


class Fifo(wiring.Component):
    """A stream FIFO (amaranth.lib.fifo) with stream ports ``i`` and ``o``."""

    def __init__(self, depth=4):
        self._depth = depth
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = queue = fifo.SyncFIFOBuffered(width=8, depth=self._depth)
        wiring.connect(m, wiring.flipped(self.i), queue.w_stream)
        wiring.connect(m, queue.r_stream, wiring.flipped(self.o))
        return m


def run_fifo(items, *, put_pause=None, get_pause=None, get=None):
    """Push ``items`` through a FIFO; returns (received, input transfers, output transfers)."""
    dut = Fifo()
    received, ins, outs, done = [], [], [], []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, items, pause=put_pause)

    async def consumer(ctx):
        if get is None:
            received.extend(await stream_get_all(ctx, dut.o, len(items), pause=get_pause))
        else:
            received.extend(await get(ctx, dut.o))
        done.append(True)

    async def monitor(ctx):
        await stream_monitor(ctx, dut.i, ins)

    async def monitor_out(ctx):
        await stream_monitor(ctx, dut.o, outs)

    async def check(ctx):
        await stream_check(ctx, dut.i)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    for process in (monitor, monitor_out, check):
        sim.add_process(process)
    sim.add_process(watchdog(100 * (len(items) + 10)))
    sim.run()
    assert done
    return received, ins, outs


ITEMS = list(range(40))


def test_back_to_back_without_pauses():
    received, ins, outs = run_fifo(ITEMS)
    assert received == ITEMS
    assert [p for _, p in ins] == ITEMS and [p for _, p in outs] == ITEMS
    assert [c for c, _ in ins] == list(range(len(ITEMS)))        # one transfer per cycle


def test_producer_pattern_idles_between_transfers():
    received, ins, _ = run_fifo(ITEMS, put_pause=itertools.cycle([1, 1, 1, 0]))
    assert received == ITEMS
    cycles = [c for c, _ in ins]
    assert cycles[0] == 3
    assert {b - a for a, b in zip(cycles, cycles[1:], strict=False)} == {4}


def test_consumer_pattern_backpressures():
    received, _, outs = run_fifo(ITEMS, get_pause=itertools.cycle([1, 0]))
    assert received == ITEMS
    cycles = [c for c, _ in outs]
    assert all(c % 2 == 1 for c in cycles)       # ready only in odd cycles
    assert {b - a for a, b in zip(cycles, cycles[1:], strict=False)} == {2}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("idle", "stall"), [(0.5, 0.0), (0.0, 0.5), (0.6, 0.6)])
def test_random_pauses_lose_nothing(seed, idle, stall):
    rng = random.Random(seed)
    items = [rng.randrange(256) for _ in range(60)]
    received, ins, outs = run_fifo(
        items,
        put_pause=random_pauses(random.Random(seed), idle) if idle else None,
        get_pause=random_pauses(random.Random(seed + 100), stall) if stall else None)
    assert received == items
    assert [p for _, p in outs] == items
    # The pauses really happened: the transfers took visibly longer than one per cycle.
    assert outs[-1][0] > len(items) + 5


def test_backpressure_holds_valid_and_payload():
    # The producer offers while the consumer refuses for long stretches; stream_check (run in
    # run_fifo on the input) would raise if valid or payload changed before the transfer.
    received, ins, _ = run_fifo(ITEMS, get_pause=random_pauses(random.Random(7), 0.8))
    assert received == ITEMS
    assert [p for _, p in ins] == ITEMS


def test_stream_get_single_and_put_single():
    async def get_three(ctx, o):
        return [await stream_get(ctx, o), await stream_get(ctx, o, pause=iter([1, 1, 0])),
                await stream_get(ctx, o)]

    received, _, _ = run_fifo([5, 6, 7], get=get_three)
    assert received == [5, 6, 7]


def test_stream_check_catches_a_dropped_valid():
    class Bad(wiring.Component):
        o: Out(stream.Signature(8))

        def elaborate(self, platform):
            m = Module()
            count = Signal(4)
            m.d.sync += count.eq(count + 1)
            m.d.comb += [self.o.valid.eq(count == 3), self.o.payload.eq(count)]
            return m

    dut = Bad()

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        for _ in range(8):      # not tick().repeat(): the failing process abandons this one
            await ctx.tick()

    async def check(ctx):
        await stream_check(ctx, dut.o)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(check)
    with pytest.raises(AssertionError, match=r"cycle 4: valid dropped before the transfer"):
        sim.run()


def test_pause_must_be_an_iterator():
    async def bench(ctx):
        await stream_put(ctx, stream.Signature(8).create(), 1, pause=[1, 0])

    with pytest.raises(TypeError, match=r"^pause must be an iterator"):
        bench(None).send(None)


def test_random_pauses_arguments():
    with pytest.raises(TypeError, match=r"^rng must be a random.Random, not 3$"):
        random_pauses(3, 0.5)
    with pytest.raises(ValueError, match=r"^probability must be a number in \[0, 1\), not 1$"):
        random_pauses(random.Random(0), 1)
    pauses = random_pauses(random.Random(0), 0.25)
    share = sum(next(pauses) for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    assert not any(next(random_pauses(random.Random(0), 0)) for _ in range(100))


def test_watchdog_stops_a_hung_simulation():
    dut = Fifo()

    async def never_satisfied(ctx):
        await stream_get(ctx, dut.o)         # nothing is ever put: waits forever

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(never_satisfied)
    sim.add_process(watchdog(50))
    with pytest.raises(TimeoutError, match=r"^simulation still running after 50 cycles$"):
        sim.run()
