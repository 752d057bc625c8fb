# amaranth: UnusedElaboratable=no
"""The UART transmitter and receiver in the Amaranth simulator: exact bit timing, loopback under
idle and backpressure, glitches, framing errors, overruns (~3 s)."""

import itertools
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hardwire.hdl.stream_sim import (
    random_pauses,
    stream_check,
    stream_get_all,
    stream_put_all,
    watchdog,
)
from hardwire.hdl.uart import UARTReceiver, UARTTransmitter


def simulate(dut, *benches, cycles=20_000):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    sim.add_process(watchdog(cycles))
    sim.run()


def line_bits(value, stop=1):
    return [0, *((value >> k) & 1 for k in range(8)), stop]


async def drive_line(ctx, line, bits, divisor):
    for bit in bits:
        ctx.set(line, bit)
        await ctx.tick().repeat(divisor)


@pytest.mark.parametrize("divisor", [4, 5, 13])
def test_transmitter_bit_timing(divisor):
    dut = UARTTransmitter(divisor=divisor)
    data = [0x00, 0xFF, 0xA5, 0x3C]
    seen = []

    async def bench(ctx):
        await ctx.tick()
        assert ctx.get(dut.tx) == 1
        ctx.set(dut.i.payload, data[0])
        ctx.set(dut.i.valid, 1)
        sent = 0
        while len(seen) < 10 * divisor * len(data) + 4:
            _, _, ready, tx = await ctx.tick().sample(dut.i.ready, dut.tx)
            if ready and sent < len(data):
                sent += 1
                if sent < len(data):
                    ctx.set(dut.i.payload, data[sent])
                else:
                    ctx.set(dut.i.valid, 0)
            seen.append(tx)

    simulate(dut, bench)
    # Sampled before each edge: idle until the first transfer edge, then back-to-back bytes,
    # each bit exactly `divisor` cycles, no idle between frames.
    expected = [b for v in data for b in line_bits(v) for _ in range(divisor)]
    assert seen[0] == 1
    assert seen[1:len(expected) + 1] == expected
    assert seen[len(expected) + 1:] == [1] * 3


@pytest.mark.parametrize(("divisor", "source", "sink"),
                         [(4, 0.0, 0.0), (5, 0.5, 0.0), (7, 0.0, 0.3), (16, 0.3, 0.3)])
def test_loopback(divisor, source, sink):
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor=divisor)
    m.submodules.rx = rx = UARTReceiver(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(24)]
    got = []

    async def put(ctx):
        await stream_put_all(ctx, tx.i, data, pause=random_pauses(rng, source) if source else None)

    async def get(ctx):
        # Backpressure shorter than a byte time never overruns the one-byte buffer.
        pause = itertools.cycle([1] * (divisor * 3) + [0]) if sink else None
        got.extend(await stream_get_all(ctx, rx.o, len(data), pause=pause))

    async def no_errors(ctx):
        async for _, _, fe, ov in ctx.tick().sample(rx.frame_error, rx.overrun):
            assert not (fe or ov)

    async def check_output(ctx):
        await stream_check(ctx, rx.o)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.add_process(no_errors)
    sim.add_process(check_output)
    sim.add_process(watchdog(50_000))
    sim.run()
    assert got == data


def receive(divisor, bits, *, ready=True, after=40):
    dut = UARTReceiver(divisor=divisor)
    out = {"bytes": [], "frame_error": 0, "overrun": 0}

    async def drive(ctx):
        ctx.set(dut.o.ready, ready)
        await drive_line(ctx, dut.rx, bits, divisor)
        await ctx.tick().repeat(after)

    async def watch(ctx):
        async for _, _, valid, ready_, payload, fe, ov in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.frame_error, dut.overrun):
            if valid and ready_:
                out["bytes"].append(payload)
            out["frame_error"] += fe
            out["overrun"] += ov

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(watch)
    sim.run()
    return out


def test_receiver_bytes_and_idle():
    out = receive(8, [1, 1] + line_bits(0x5A) + line_bits(0x81) + [1])
    assert out == {"bytes": [0x5A, 0x81], "frame_error": 0, "overrun": 0}


def test_receiver_ignores_a_glitch():
    # A low pulse shorter than half a bit is not a start bit; the byte after it is received.
    divisor = 8
    dut = UARTReceiver(divisor=divisor)
    got = []

    async def drive(ctx):
        ctx.set(dut.o.ready, 1)
        await ctx.tick().repeat(5)
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(2)           # 2 cycles low < divisor / 2
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * divisor)
        await drive_line(ctx, dut.rx, line_bits(0xC4), divisor)
        await ctx.tick().repeat(3 * divisor)

    async def watch(ctx):
        async for _, _, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(watch)
    sim.run()
    assert got == [0xC4]


def test_receiver_framing_error():
    out = receive(6, line_bits(0x42, stop=0) + [1, 1] + line_bits(0x24))
    assert out == {"bytes": [0x24], "frame_error": 1, "overrun": 0}


def test_receiver_overrun_keeps_the_first_byte():
    dut = UARTReceiver(divisor=5)
    overruns = [0]

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        await drive_line(ctx, dut.rx, line_bits(0x11) + line_bits(0x22) + [1, 1], 5)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x11

    async def watch(ctx):
        async for _, _, ov in ctx.tick().sample(dut.overrun):
            overruns[0] += ov

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(watch)
    sim.run()
    assert overruns == [1]


@pytest.mark.parametrize("bad", [3, 0, 4.0, True, None])
def test_divisor_checked(bad):
    with pytest.raises(ValueError, match=r"divisor must be an integer of at least 4 clocks per "
                                         r"bit, not"):
        UARTTransmitter(divisor=bad)
    with pytest.raises(ValueError, match="divisor must be"):
        UARTReceiver(divisor=bad)
