# amaranth: UnusedElaboratable=no
"""The SPI flash reader and the weight loader in the Amaranth simulator, against the flash model
of :mod:`hardwire.sim.spi_flash_model`: the bytes, their order, the wake-up, the CRC check and
the cycle counts the docstrings give."""

import zlib

import pytest
from amaranth.sim import Simulator

from hardwire.hdl.spi_flash import CMD_READ, CMD_RELEASE_POWER_DOWN, SPIFlashReader
from hardwire.hdl.weight_loader import FlashWeightLoader
from hardwire.sim.spi_flash_model import SPIFlashModel

PERIOD_NS = 10
OFFSET = 0x10_0000


def run(dut, model, *, limit):
    """Clock ``dut`` with ``model`` on its flash lines until ``done``; returns the values seen on
    ``dut.o`` and the cycle ``done`` rose (counted from the first cycle after reset)."""
    seen, finished = [], []

    async def bench(ctx):
        for cycle in range(limit):
            cipo = model.update(ctx.get(dut.cs), ctx.get(dut.sck), ctx.get(dut.copi),
                                cycle * PERIOD_NS)
            ctx.set(dut.cipo, cipo)
            if ctx.get(dut.done):
                finished.append(cycle)
                return
            if ctx.get(dut.o.valid):
                seen.append(ctx.get(dut.o.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(PERIOD_NS * 1e-9)
    sim.add_testbench(bench)
    sim.run()
    assert finished, f"done did not rise within {limit} cycles"
    return seen, finished[0]


def test_reader_wakes_the_flash_and_reads_in_order():
    data = bytes(range(7, 7 + 40))
    model = SPIFlashModel({OFFSET - 3: b"\x11\x22\x33", OFFSET: data})
    dut = SPIFlashReader(offset=OFFSET, length=len(data), wake_cycles=400)
    seen, done_at = run(dut, model, limit=5000)
    assert bytes(seen) == data
    assert model.commands == [(CMD_RELEASE_POWER_DOWN, None, 0), (CMD_READ, OFFSET, len(data))]
    assert done_at == dut.cycles


def test_reader_without_the_wake_up_time_reads_nothing():
    # 200 cycles of 10 ns are less than the flash's 3 us tRES1: the model ignores the read.
    model = SPIFlashModel({0: b"\x00" * 8})
    dut = SPIFlashReader(offset=0, length=8, wake_cycles=200)
    seen, _ = run(dut, model, limit=2000)
    assert seen == [0xFF] * 8 and model.commands[1] == (CMD_READ, None, 0)


@pytest.mark.parametrize("corrupt", [False, True])
def test_loader_words_and_crc(corrupt):
    words = [0x1234, 0xBEEF, 0x0001, 0x8000, 0x7F80]
    image = b"".join(w.to_bytes(2, "little") for w in words)
    flash = bytearray(image)
    if corrupt:
        flash[3] ^= 0x10
    dut = FlashWeightLoader(words=len(words), crc32=zlib.crc32(image), wake_cycles=400)
    seen, done_at = run(dut, SPIFlashModel({OFFSET: bytes(flash)}),
                        limit=5000)
    expected = [int.from_bytes(flash[k:k + 2], "little") for k in range(0, len(flash), 2)]
    assert seen == expected and done_at == dut.cycles


def test_loader_reports_the_crc():
    words = [1, 2, 3]
    image = b"".join(w.to_bytes(2, "little") for w in words)
    for flash, ok in ((image, 1), (b"\xff" * 6, 0)):
        dut = FlashWeightLoader(words=3, crc32=zlib.crc32(image), wake_cycles=400)
        oks = []

        async def bench(ctx, dut=dut, flash=flash, oks=oks):
            model = SPIFlashModel({OFFSET: flash})
            for cycle in range(3000):
                ctx.set(dut.cipo, model.update(ctx.get(dut.cs), ctx.get(dut.sck),
                                               ctx.get(dut.copi), cycle * PERIOD_NS))
                if ctx.get(dut.done):
                    oks.append(ctx.get(dut.ok))
                    return
                await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(PERIOD_NS * 1e-9)
        sim.add_testbench(bench)
        sim.run()
        assert oks == [ok]


def test_reader_refuses_addresses_beyond_24_bits():
    with pytest.raises(ValueError, match="24-bit"):
        SPIFlashReader(offset=(1 << 24) - 4, length=8)
