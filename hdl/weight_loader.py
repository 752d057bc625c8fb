"""The serial engine's weights from the board's SPI flash, checked, as 16-bit words."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.crc.catalog import CRC32_ISO_HDLC
from amaranth.lib.wiring import In, Out

from .spi_flash import WAKE_CYCLES, SPIFlashReader

__all__ = ["FLASH_OFFSET", "FlashWeightLoader"]

# Where the weights image goes in the flash: 1 MiB, past the UP5K bitstream (104 kB) and clear
# of what `iceprog` writes for it.
FLASH_OFFSET = 0x10_0000


class FlashWeightLoader(wiring.Component):
    """Reads ``words`` 16-bit words (little-endian, ``2 * words`` bytes) from SPI flash at
    ``offset`` once after reset (:class:`~hardwire.hdl.spi_flash.SPIFlashReader`), streams them
    out and checks the CRC-32 (ISO-HDLC, zlib's) of the bytes against ``crc32``, the image the
    design was compiled for.

    Members
    -------
    sck, cs, copi, cipo
        The flash's lines, as :class:`~hardwire.hdl.spi_flash.SPIFlashReader`.
    o : ``Out(stream.Signature(16))``
        The words in address order, one every 32 cycles, ``ready`` ignored.
    done : ``Out(1)``
        The image has been read and checked: :attr:`cycles` clock edges after reset on.
    ok : ``Out(1)``
        With ``done``: its CRC matched (the flash holds this design's weights).
    """

    def __init__(self, *, words, crc32, offset=FLASH_OFFSET, wake_cycles=WAKE_CYCLES):
        self._crc32 = crc32
        self._reader = SPIFlashReader(offset=offset, length=2 * words, wake_cycles=wake_cycles)
        super().__init__({"sck": Out(1), "cs": Out(1), "copi": Out(1), "cipo": In(1),
                          "o": Out(stream.Signature(16)), "done": Out(1), "ok": Out(1)})

    @property
    def cycles(self):
        """Clock edges from reset to ``done``."""
        return self._reader.cycles + 2

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self._reader
        m.submodules.crc = crc = CRC32_ISO_HDLC(data_width=8).create()
        m.d.comb += [self.sck.eq(reader.sck), self.cs.eq(reader.cs), self.copi.eq(reader.copi),
                     reader.cipo.eq(self.cipo),
                     crc.data.eq(reader.o.payload), crc.valid.eq(reader.o.valid)]
        low, high = Signal(8), Signal()         # the word's first byte has come
        with m.If(reader.o.valid):
            m.d.sync += [low.eq(reader.o.payload), high.eq(~high)]
            m.d.comb += [self.o.valid.eq(high), self.o.payload.eq(reader.o.payload << 8 | low)]
        # crc.crc is registered: it covers the last byte the cycle after reader.done rises.
        settled = Signal()
        m.d.sync += settled.eq(reader.done)
        with m.If(settled & ~self.done):
            m.d.sync += [self.done.eq(1), self.ok.eq(crc.crc == self._crc32)]
        return m
