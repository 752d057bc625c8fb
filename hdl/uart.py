"""An 8N1 UART: a byte stream to a serial line and back, at a fixed number of clocks per bit."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTTransmitter", "UARTReceiver", "check_divisor"]


def check_divisor(divisor):
    """``divisor`` if it is an integer ``>= 4``; :class:`ValueError` otherwise."""
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"divisor must be an integer of at least 4 clocks per bit, "
                         f"not {divisor!r}")
    return divisor


class _Serial(wiring.Component):
    """What both directions share: ``divisor`` clock cycles per bit, checked once."""

    def __init__(self, *, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__()

    @property
    def divisor(self):
        return self._divisor


class UARTTransmitter(_Serial):
    """Sends each byte of ``i`` on ``tx`` as 8N1: a low start bit, 8 data bits LSB first, a high
    stop bit, each held for ``divisor`` clock cycles. ``tx`` idles high.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, ``>= 4`` (``round(f_clk / baud)``).

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send. ``ready`` is high while the line is idle and in the last cycle of a stop
        bit.
    tx : ``Out(1, init=1)``
        The serial line, driven from a register.

    Timing
    ------
    The start bit begins at the clock edge of the transfer; the next transfer can happen at the
    edge that ends the stop bit: one byte per ``10 * divisor`` cycles.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0b11_1111_1111)   # stop, data[7:0], start; bit 0 is on the line
        bits = Signal(range(11))                  # bits still to finish, 0 when idle
        timer = Signal(range(self._divisor))
        # Ready in the last cycle of the stop bit too, so bytes go out back to back.
        m.d.comb += [self.tx.eq(shreg[0]),
                     self.i.ready.eq((bits == 0) | ((bits == 1) & (timer == 0)))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(1 << 9 | self.i.payload << 1), bits.eq(10),
                         timer.eq(self._divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(shreg >> 1 | 1 << 9), bits.eq(bits - 1),
                             timer.eq(self._divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTReceiver(_Serial):
    """Receives 8N1 bytes from ``rx`` into the stream ``o``.

    ``rx`` passes through a two-flip-flop synchronizer. A falling edge starts a byte; the start
    bit is checked half a bit later (a shorter low pulse is ignored), then each data bit and the
    stop bit are sampled one bit period apart, in their middles.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, ``>= 4``.

    Members
    -------
    rx : ``In(1, init=1)``
        The serial line (asynchronous to the clock).
    o : ``Out(stream.Signature(8))``
        Received bytes; a one-byte buffer (``valid`` stays high until the transfer).
    frame_error : ``Out(1)``
        Strobe, one cycle: the stop bit was low; the byte is dropped.
    overrun : ``Out(1)``
        Strobe, one cycle: a byte arrived while the previous one was still in the buffer; the new
        byte is dropped.

    Timing
    ------
    A byte is valid on ``o`` about ``9.5 * divisor + 3`` cycles after the start bit's falling
    edge (in the middle of the stop bit), so back-to-back bytes are accepted at full rate.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d))
        shreg = Signal(8)
        bit = Signal(range(9))

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM(name="rx"):
            with m.State("IDLE"), m.If(~rx):
                m.d.sync += timer.eq(d // 2 - 1)
                m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    with m.If(rx):             # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(rx << 7 | shreg >> 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.next = "IDLE"
                    with m.If(~rx):
                        m.d.comb += self.frame_error.eq(1)
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
        return m
