"""cocotb bench of the board top (:class:`hardwire.hdl.board_top.BoardTop`) over its serial lines.

The bench is the host: it drives ``rx`` with 8N1 bit timing (``divisor`` clock cycles per bit)
and decodes ``tx`` the same way, sampling each bit in its middle, so the UARTs, the framing and
the decoder are all under test. Nothing is read from inside the design.

Parameters (:func:`hardwire.sim.cocotb_stream.params`): ``divisor``; ``commands``, a list of
byte lists, each sent as it is (a command frame, or anything else); ``max_cycles``, the longest
wait for the next reply byte; for a top that reads its weights from SPI flash, ``flash``:
``{byte address: list of bytes}``, what the flash model (:mod:`hardwire.sim.spi_flash_model`) on
its ``flash_*`` lines holds. After each command the bench reads reply frames (3 bytes) until a
status frame (``FLAG_TOKEN`` clear) arrives, then sends the next command.

Result: ``replies``, per command the list of reply frames (each a list of 3 bytes), and
``frame_cycles``, per command the cycle at which each frame's start bit began (cycles counted
from reset release), and ``idle_after``: whether ``tx`` stayed idle for 40 bit periods after the
last status frame (no unexpected bytes), and with ``flash`` also ``flash_commands``: the
commands the flash saw (opcode, start address, bytes read).
"""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, First, ReadOnly, Timer, ValueChange
from cocotb.utils import get_sim_time

from hardwire.hdl.board_top import FLAG_TOKEN, FRAME_BYTES
from hardwire.sim.cocotb_stream import params, start, write_result
from hardwire.sim.spi_flash_model import SPIFlashModel

PERIOD_NS = 10


def _cycle():
    return int(get_sim_time("ns")) // PERIOD_NS


async def send_byte(dut, divisor, value):
    """Drive one 8N1 byte on ``rx``: start bit, 8 data bits LSB first, stop bit."""
    await FallingEdge(dut.clk)
    for bit in [0, *((value >> k) & 1 for k in range(8)), 1]:
        dut.rx.value = bit
        await ClockCycles(dut.clk, divisor, rising=False)


async def receive_byte(dut, divisor, max_cycles):
    """Wait for a start bit on ``tx`` and return ``(byte, cycle of the start bit)``; raises
    ``AssertionError`` after ``max_cycles`` without one or on a low stop bit."""
    timeout = Timer(max_cycles * PERIOD_NS, unit="ns")
    fired = await First(FallingEdge(dut.tx), timeout)
    if fired is timeout:
        raise AssertionError(f"no reply byte within {max_cycles} cycles")
    began = _cycle()
    await ClockCycles(dut.clk, divisor // 2)
    await ReadOnly()
    assert not dut.tx.value, "start bit too short"
    value = 0
    for k in range(8):
        await ClockCycles(dut.clk, divisor)
        await ReadOnly()
        value |= int(dut.tx.value) << k
    await ClockCycles(dut.clk, divisor)
    await ReadOnly()
    assert dut.tx.value, f"stop bit low after byte {value:#04x}"
    return value, began


async def receive_reply(dut, divisor, max_cycles):
    """Reply frames up to and including the first status frame, with their start cycles."""
    frames, cycles = [], []
    while True:
        frame = []
        for _ in range(FRAME_BYTES):
            value, began = await receive_byte(dut, divisor, max_cycles)
            if not frame:
                cycles.append(began)
            frame.append(value)
        frames.append(frame)
        if not frame[2] & FLAG_TOKEN:
            return frames, cycles


async def serve_flash(dut, model):
    """The flash on the ``flash_*`` lines: answers every change of ``cs`` and ``sck``."""
    while True:
        await First(ValueChange(dut.flash_sck), ValueChange(dut.flash_cs))
        dut.flash_cipo.value = model.update(int(dut.flash_cs.value), int(dut.flash_sck.value),
                                            int(dut.flash_copi.value), get_sim_time("ns"))


@cocotb.test()
async def board_session(dut):
    p = params()
    divisor = p["divisor"]
    dut.rx.value = 1
    flash = None
    if "flash" in p:
        flash = SPIFlashModel({int(a): bytes(d) for a, d in p["flash"].items()})
        dut.flash_cipo.value = 1
        cocotb.start_soon(serve_flash(dut, flash))
    await start(dut, period_ns=PERIOD_NS)
    replies, frame_cycles = [], []
    for command in p["commands"]:
        receiver = cocotb.start_soon(receive_reply(dut, divisor, p["max_cycles"]))
        for byte in command:
            await send_byte(dut, divisor, byte)
        frames, cycles = await receiver
        replies.append(frames)
        frame_cycles.append(cycles)
    quiet = Timer(40 * divisor * PERIOD_NS, unit="ns")
    idle_after = await First(FallingEdge(dut.tx), quiet) is quiet
    result = {"replies": replies, "frame_cycles": frame_cycles, "idle_after": idle_after}
    if flash is not None:
        result["flash_commands"] = flash.commands
    write_result(result)
