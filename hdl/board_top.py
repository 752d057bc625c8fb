"""The compiled decoder behind a UART: what an FPGA board runs.

Byte protocol (8N1, every frame 3 bytes, 16-bit numbers little-endian)
=======================================================================

Host → board, a command frame ``opcode, arg_lo, arg_hi``:

=======  ==========  =====================================================================
opcode   ``arg``     effect
=======  ==========  =====================================================================
``'S'``  max_new     wait until the decoder is idle, begin a new sequence (``start``), set
                     ``max_new``, clear ``LINK_ERROR``
``'N'``  max_new     set ``max_new`` (for continuing a sequence)
``'P'``  token id    a prompt token; more follow
``'L'``  token id    the final prompt token: up to ``max_new`` tokens are generated
``'Q'``  ignored     nothing (asks for a status frame)
=======  ==========  =====================================================================

Board → host, a reply frame ``lo, hi, flags``. ``flags`` bits: 0 ``TOKEN`` (``lo, hi`` is a
generated token id), 1 ``LAST`` (the final generated token), 2 ``BUSY``, 3 ``CONTEXT_FULL``,
4 ``ERROR`` (a prompt token id ``>= vocab`` arrived), 5 ``LINK_ERROR`` (a UART framing error,
an overrun or an unknown opcode since the last ``'S'``), 6 ``WEIGHTS_ERROR`` (a design whose
weights come from SPI flash read an image whose CRC is not the one it was compiled for: the flash
holds no weights, or another model's; every ``'P'``/``'L'`` is dropped). A *status frame* has
``TOKEN`` clear and carries the design's 16-bit ``model_id`` in ``lo, hi``.

Every command is answered by zero or more token frames (only ``'L'`` has any) and then exactly
one status frame; the host waits for that status frame before it sends the next command (a
byte sent earlier may be lost and raise ``LINK_ERROR``). An unknown opcode byte is a one-byte
frame answered by a status frame with ``LINK_ERROR``, so a host resynchronizes by sending
``'Q'`` frames until one is answered. A ``'P'``/``'L'`` sent while the decoder is halted (after
``ERROR`` or ``CONTEXT_FULL``, until ``'S'``) is dropped and answered by a status frame. The
status flags are the decoder's (:class:`hardwire.hdl.decoder.Decoder`), sampled the cycle after
the command took effect (``BUSY`` is high after a ``'P'``: the token is still being processed).
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .uart import UARTReceiver, UARTTransmitter, check_divisor
from .weight_loader import FLASH_OFFSET, FlashWeightLoader

__all__ = ["OP_START", "OP_MAX_NEW", "OP_PROMPT", "OP_LAST", "OP_STATUS", "OPCODES",
           "FLAG_TOKEN", "FLAG_LAST", "FLAG_BUSY", "FLAG_CONTEXT_FULL", "FLAG_ERROR",
           "FLAG_LINK_ERROR", "FLAG_WEIGHTS_ERROR", "FRAME_BYTES", "BoardTop"]

OP_START, OP_MAX_NEW, OP_PROMPT, OP_LAST, OP_STATUS = (ord(c) for c in "SNPLQ")
OPCODES = (OP_START, OP_MAX_NEW, OP_PROMPT, OP_LAST, OP_STATUS)
FLAG_TOKEN, FLAG_LAST, FLAG_BUSY, FLAG_CONTEXT_FULL, FLAG_ERROR, FLAG_LINK_ERROR, \
    FLAG_WEIGHTS_ERROR = (1 << n for n in range(7))
FRAME_BYTES = 3


class BoardTop(wiring.Component):
    """A :class:`~hardwire.hdl.decoder.Decoder` driven over a UART with the byte protocol of this
    module's docstring.

    Parameters
    ----------
    decoder : Decoder
        The compiled decoder (only its ports are used); its vocabulary must fit 16 bits.
    divisor : int
        UART clock cycles per bit, ``>= 4`` (``round(f_clk / baud)``).
    model_id : int
        16-bit identity sent in every status frame (a host checks it against its model).
    flash_offset : int
        Where a decoder that takes its weights over a ``weights`` stream
        (:class:`~hardwire.hdl.serial.SerialDecoder` with ``weight_store="flash"``) finds them
        in the SPI flash (:class:`~hardwire.hdl.weight_loader.FlashWeightLoader`).

    Members
    -------
    rx : ``In(1, init=1)``
        UART line from the host.
    tx : ``Out(1, init=1)``
        UART line to the host.
    busy, context_full, error, link_error, weights_error : ``Out(1)``
        The status flags, for LEDs.
    flash_sck, flash_cs, flash_copi : ``Out(1)``; flash_cipo : ``In(1)``
        Only for a decoder with a ``weights`` stream: the SPI flash (``flash_cs`` high selects
        it). Until its image is read and checked (``loader.cycles``, ~27 ms for kjv-micro at
        12 MHz) the decoder is busy and ``'S'``, ``'P'``, ``'L'`` wait.

    Timing
    ------
    A frame takes ``30 * divisor`` cycles on the line each way. During a generation the
    decoder computes the next token while the previous token frame is sent, so tokens leave
    every ``max(cycles_per_token, 30 * divisor)`` cycles, about.
    """

    def __init__(self, *, decoder, divisor, model_id, flash_offset=FLASH_OFFSET):
        if decoder.vocab > 1 << 16:
            raise ValueError(f"the UART protocol carries 16-bit token ids; vocab {decoder.vocab} "
                             f"needs more")
        if not isinstance(model_id, int) or not 0 <= model_id < 1 << 16:
            raise ValueError(f"model_id must be an integer in [0, 65535], not {model_id!r}")
        self._decoder = decoder
        self._divisor = check_divisor(divisor)
        self._model_id = model_id
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                   "context_full": Out(1), "error": Out(1), "link_error": Out(1),
                   "weights_error": Out(1)}
        self._loader = None
        if "weights" in decoder.signature.members:
            _, crc32 = decoder.weight_image
            self._loader = FlashWeightLoader(words=len(decoder.weight_words), crc32=crc32,
                                             offset=flash_offset)
            members.update(flash_sck=Out(1), flash_cs=Out(1), flash_copi=Out(1),
                           flash_cipo=In(1))
        super().__init__(members)

    @property
    def decoder(self):
        return self._decoder

    @property
    def divisor(self):
        return self._divisor

    @property
    def model_id(self):
        return self._model_id

    @property
    def loader(self):
        """The :class:`~hardwire.hdl.weight_loader.FlashWeightLoader`, or ``None`` for a decoder
        whose weights are in ROM."""
        return self._loader

    def elaborate(self, platform):
        m = Module()
        dec = self._decoder
        m.submodules.decoder = dec
        m.submodules.uart_rx = urx = UARTReceiver(divisor=self._divisor)
        m.submodules.uart_tx = utx = UARTTransmitter(divisor=self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        opcode = Signal(8)
        arg = Signal(16)
        max_new = Signal(16)
        received = Signal(range(FRAME_BYTES))   # bytes of the command frame so far
        frame = Signal(8 * FRAME_BYTES)          # reply frame being sent
        sent = Signal(range(FRAME_BYTES))
        link_error = Signal()
        weights_ready, weights_error = Const(1), Const(0)
        if self._loader is not None:
            m.submodules.loader = loader = self._loader
            weights_ready, weights_error = loader.done, loader.done & ~loader.ok
            m.d.comb += [self.flash_sck.eq(loader.sck), self.flash_cs.eq(loader.cs),
                         self.flash_copi.eq(loader.copi), loader.cipo.eq(self.flash_cipo),
                         dec.weights.valid.eq(loader.o.valid),
                         dec.weights.payload.eq(loader.o.payload)]

        flags = Cat(Const(0, 2), dec.busy, dec.context_full, dec.error, link_error,
                    weights_error, Const(0, 1))
        m.d.comb += [
            dec.max_new.eq(max_new),
            dec.i.payload.token.eq(arg),
            dec.i.payload.last.eq(opcode == OP_LAST),
            self.busy.eq(dec.busy), self.context_full.eq(dec.context_full),
            self.error.eq(dec.error), self.link_error.eq(link_error),
            self.weights_error.eq(weights_error),
            utx.i.payload.eq(frame.word_select(sent, 8)),
        ]
        with m.If(urx.frame_error | urx.overrun):
            m.d.sync += link_error.eq(1)

        with m.FSM(name="board"):
            with m.State("RECEIVE"):
                m.d.comb += urx.o.ready.eq(1)
                byte = urx.o.payload
                with m.If(urx.o.valid), m.Switch(received):
                    with m.Case(0):
                        m.d.sync += opcode.eq(byte)
                        with m.If(Cat(byte == op for op in OPCODES).any()):
                            m.d.sync += received.eq(1)
                        with m.Else():
                            m.d.sync += link_error.eq(1)
                            m.next = "STATUS"
                    with m.Case(1):
                        m.d.sync += [arg[:8].eq(byte), received.eq(2)]
                    with m.Default():
                        m.d.sync += [arg[8:].eq(byte), received.eq(0)]
                        m.next = "DISPATCH"
            with m.State("DISPATCH"), m.Switch(opcode):
                with m.Case(OP_START), m.If(~dec.busy & weights_ready):
                    # Only pulse start when idle: start would abort a generation.
                    m.d.sync += [max_new.eq(arg), link_error.eq(0)]
                    m.next = "START"
                with m.Case(OP_MAX_NEW):
                    m.d.sync += max_new.eq(arg)
                    m.next = "STATUS"
                with m.Case(OP_PROMPT, OP_LAST):
                    m.next = "OFFER"
                with m.Default():
                    m.next = "STATUS"
            with m.State("START"):
                # Its own state, so `start` (the reset of every decoder register, and the
                # abort of its handshakes) comes from the state register, not from the opcode.
                m.d.comb += dec.start.eq(1)
                m.next = "STATUS"
            with m.State("OFFER"):
                # Weights not yet checked: wait; bad weights: drop the token.
                m.d.comb += dec.i.valid.eq(weights_ready & ~weights_error)
                with m.If(dec.i.valid & dec.i.ready):
                    m.next = "STATUS"
                    with m.If(opcode == OP_LAST):
                        m.next = "GENERATE"
                with m.Elif(dec.error | dec.context_full | weights_error):
                    # Halted: the decoder takes no token until 'S'; drop this one.
                    m.next = "STATUS"
            with m.State("GENERATE"):
                m.d.comb += dec.o.ready.eq(1)
                with m.If(dec.o.valid):
                    last = dec.o.payload.last
                    m.d.sync += frame.eq(Cat(dec.o.payload.token[:16], Const(FLAG_TOKEN, 1),
                                             last, flags[2:]))
                    m.next = "SEND_TOKEN"
                with m.Elif(~dec.busy):
                    m.next = "STATUS"
            with m.State("SEND_TOKEN"):
                self._send(m, utx, sent, "GENERATE")
            with m.State("STATUS"):
                m.d.sync += frame.eq(Cat(Const(self._model_id, 16), flags))
                m.next = "SEND_STATUS"
            with m.State("SEND_STATUS"):
                self._send(m, utx, sent, "RECEIVE")
        return m

    @staticmethod
    def _send(m, utx, sent, then):
        m.d.comb += utx.i.valid.eq(1)
        with m.If(utx.i.ready):
            m.d.sync += sent.eq(sent + 1)
            with m.If(sent == FRAME_BYTES - 1):
                m.d.sync += sent.eq(0)
                m.next = then
