"""A SPI NOR flash, as far as a board's weight loader uses one: the part the tests put on the
other side of :class:`hardwire.hdl.spi_flash.SPIFlashReader`.

It answers as the iCEBreaker's W25Q128 does in SPI mode 0: it powers up in deep power-down (the
FPGA's configuration logic may leave it so), wakes on ``0xAB`` after ``tRES1`` with the chip
deselected, and answers ``0x03`` (read, 24-bit address) with bytes most significant bit first,
shifted out on the falling edge of ``sck``; erased bytes read ``0xFF``. A read while powered
down, or before ``tRES1`` has passed, is ignored and ``cipo`` stays high, as a real part's
pulled-up line would. Every command it saw is kept in :attr:`commands` for the tests.
"""

__all__ = ["T_RES1_NS", "SPIFlashModel"]

T_RES1_NS = 3000
_RELEASE, _READ = 0xAB, 0x03


class SPIFlashModel:
    """``contents``: ``{byte address: bytes}``. Call :meth:`update` with the pins whenever one may
    have changed (every clock cycle, or on each edge of ``cs`` and ``sck``); it returns ``cipo``."""

    def __init__(self, contents, *, powered_down=True):
        self._contents = dict(contents)
        self._down = powered_down
        self._awake_at = 0.0
        self._cs = self._sck = 0
        self._cipo = 1
        self._reset_frame()
        self.commands = []          # (opcode, address or None, bytes read)

    def _reset_frame(self):
        self._bits = 0
        self._shift = 0
        self._opcode = None
        self._address = self._start = None
        self._out_bit = 0
        self._read = 0

    def byte_at(self, address):
        for base, data in self._contents.items():
            if base <= address < base + len(data):
                return data[address - base]
        return 0xFF

    def update(self, cs, sck, copi, now_ns=0.0):
        """The pins now (``cs`` high: selected) at simulation time ``now_ns``; returns ``cipo``."""
        if cs and not self._cs:
            self._reset_frame()
        elif self._cs and not cs:
            self._end_frame(now_ns)
            self._cipo = 1
        elif cs and sck and not self._sck:
            self._rising(copi, now_ns)
        elif cs and self._sck and not sck:
            self._falling()
        self._cs, self._sck = cs, sck
        return self._cipo

    def _end_frame(self, now_ns):
        if self._opcode is not None:
            self.commands.append((self._opcode, self._start, self._read))
        if self._opcode == _RELEASE and self._bits == 8:
            self._down = False
            self._awake_at = now_ns + T_RES1_NS

    def _rising(self, copi, now_ns):
        if self._address is not None:
            return                              # reading: the input is ignored
        self._shift = self._shift << 1 | copi
        self._bits += 1
        if self._bits == 8:
            self._opcode = self._shift
        elif self._bits == 32 and self._opcode == _READ:
            awake = not self._down and now_ns >= self._awake_at
            if awake:
                self._address = self._start = self._shift & 0xFF_FFFF

    def _falling(self):
        if self._address is None:
            return
        byte = self.byte_at(self._address)
        self._cipo = byte >> (7 - self._out_bit) & 1
        self._out_bit += 1
        if self._out_bit == 8:
            self._out_bit = 0
            self._address += 1
            self._read += 1
