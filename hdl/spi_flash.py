"""Reading a block of a SPI NOR flash (the board's configuration flash) once after reset."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CMD_RELEASE_POWER_DOWN", "CMD_READ", "WAKE_CYCLES", "SPIFlashReader"]

CMD_RELEASE_POWER_DOWN = 0xAB
CMD_READ = 0x03
# tRES1, the flash's wake-up time after 0xAB, is 3 us on the W25Q128 of the iCEBreaker (and
# most SPI NOR parts): 1024 cycles cover it up to a 340 MHz clock.
WAKE_CYCLES = 1024


class SPIFlashReader(wiring.Component):
    """Reads ``length`` bytes at byte address ``offset`` of a SPI NOR flash once, after reset,
    and streams them out.

    It sends release-from-power-down (``0xAB``: the FPGA's configuration logic may leave the
    flash powered down), waits ``wake_cycles`` with the chip deselected, then one read
    (``0x03``, a 24-bit address) and clocks in ``length`` bytes, most significant bit first.
    SPI mode 0 with ``sck`` at half the clock: outputs change with the falling edge of ``sck``,
    ``cipo`` is sampled at the clock edge that raises it, a whole clock cycle after the flash
    drove it.

    Members
    -------
    sck, cs, copi : ``Out(1)``
        Serial clock, chip select (high: selected; the board's pin is active low), data to the
        flash.
    cipo : ``In(1)``
        Data from the flash.
    o : ``Out(stream.Signature(8))``
        The bytes, in address order; ``valid`` for one cycle each and ``ready`` ignored (the
        consumer keeps up: a byte comes every 16 cycles).
    done : ``Out(1)``
        High from the cycle after the last byte on.

    Timing
    ------
    ``done`` rises ``2 * 8 + wake_cycles + 2 * (32 + 8 * length) + 2`` clock edges after reset.
    """

    def __init__(self, *, offset, length, wake_cycles=WAKE_CYCLES):
        if not (offset >= 0 and offset + length <= 1 << 24):
            raise ValueError(f"bytes {offset:#x}..{offset + length:#x} are beyond the 24-bit "
                             f"addresses of a 0x03 read")
        if length < 1:
            raise ValueError(f"length must be at least 1, not {length!r}")
        self._offset, self._length, self._wake = offset, length, wake_cycles
        super().__init__({"sck": Out(1), "cs": Out(1), "copi": Out(1), "cipo": In(1),
                          "o": Out(stream.Signature(8)), "done": Out(1)})

    @property
    def cycles(self):
        """Clock edges from reset to ``done``."""
        return 2 * 8 + self._wake + 2 * (32 + 8 * self._length) + 2

    def elaborate(self, platform):
        m = Module()
        out = Signal(32)                        # bits to send, the next one on top
        sent = Signal(range(33))                # bits of the command left to send
        bit = Signal(3)                         # bits of the current byte received
        byte = Signal(8)
        left = Signal(range(self._length + 1))  # bytes left to receive
        phase = Signal()                        # sck is high
        wait = Signal(range(self._wake + 1))
        m.d.comb += [self.copi.eq(out[31]), self.o.payload.eq(byte)]

        def clock_bit():
            """One bit period: returns the condition "a bit ended in this cycle"."""
            ended = Signal()
            with m.If(~phase):
                m.d.sync += [self.sck.eq(1), phase.eq(1), byte.eq(Cat(self.cipo, byte[:7]))]
            with m.Else():
                m.d.sync += [self.sck.eq(0), phase.eq(0), out.eq(out << 1)]
                m.d.comb += ended.eq(1)
            return ended

        with m.FSM():
            with m.State("RESET"):
                m.d.sync += [self.cs.eq(1), out.eq(CMD_RELEASE_POWER_DOWN << 24), sent.eq(8)]
                m.next = "WAKE_CMD"
            with m.State("WAKE_CMD"), m.If(clock_bit()):
                m.d.sync += sent.eq(sent - 1)
                with m.If(sent == 1):
                    m.d.sync += [self.cs.eq(0), wait.eq(self._wake)]
                    m.next = "WAKE_WAIT"
            with m.State("WAKE_WAIT"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += [self.cs.eq(1), out.eq((CMD_READ << 24) | self._offset),
                                 sent.eq(32)]
                    m.next = "READ_CMD"
            with m.State("READ_CMD"), m.If(clock_bit()):
                m.d.sync += sent.eq(sent - 1)
                with m.If(sent == 1):
                    m.d.sync += [left.eq(self._length), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"), m.If(clock_bit()):
                m.d.sync += bit.eq(bit + 1)
                with m.If(bit == 7):
                    m.d.comb += self.o.valid.eq(1)
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.d.sync += self.cs.eq(0)
                        m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
        return m
