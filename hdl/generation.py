"""The greedy generation loop both decoders share: prompt intake, token emission, halting."""

from amaranth.hdl import Const, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_NEW_BITS", "token_bits", "decoder_signature", "GenerationLoop"]

MAX_NEW_BITS = 16


def token_bits(vocab):
    """Width of a token id on the decoder's streams: ``max(16, bit_length(vocab))``."""
    return max(16, vocab.bit_length())


def decoder_signature(vocab):
    """The ports of a decoder (:class:`hardwire.hdl.decoder.Decoder` documents them)."""
    layout = data.StructLayout({"token": unsigned(token_bits(vocab)), "last": 1})
    return wiring.Signature({
        "i": In(stream.Signature(layout)),
        "o": Out(stream.Signature(layout)),
        "max_new": In(MAX_NEW_BITS),
        "start": In(1),
        "busy": Out(1),
        "context_full": Out(1),
        "error": Out(1),
    })


class GenerationLoop:
    """The registers and the ``PROMPT``, ``EMIT`` and ``HALT`` states of a decoder's control FSM
    (the protocol of :class:`hardwire.hdl.decoder.Decoder`).

    ``PROMPT`` takes a token from ``dut.i`` (refusing ids ``>= vocab`` with ``error`` and a full
    context with ``context_full``) and goes to ``FEED``, which the decoder provides: it runs the
    token at :attr:`pos` and goes back to ``PROMPT``, or to ``EMIT`` when :attr:`want` is set.
    ``EMIT`` offers the result on ``dut.o`` and feeds it back (``FEED`` again) until ``max_new``
    tokens, ``eos_id`` or the end of the context. ``HALT`` waits for ``start``. While ``hold`` is
    high ``PROMPT`` takes nothing (the serial engine's weights are not loaded yet).
    """

    def __init__(self, dut, *, vocab, context, eos_id, token_bits, hold=None):
        self._dut, self._vocab, self._context, self._eos = dut, vocab, context, eos_id
        self._hold = Const(0) if hold is None else hold
        self.pos = Signal(range(context + 1))        # position of the next token fed in
        self.token = Signal(unsigned(token_bits))    # the token to run
        self.want = Signal()                          # the token in flight needs its logits
        self.left = Signal(MAX_NEW_BITS)              # tokens still to emit
        self.abort = Signal()                         # start or reset in this cycle

    def states(self, m, *, result, result_valid=1, result_ready=None):
        """Add the states to the FSM open in ``m``. ``result`` is the next token (valid with
        ``result_valid``); ``result_ready``, when given, is driven with its transfer, or high in
        an ``abort`` cycle too, so the caller must reset the result's unit with ``start``."""
        dut = self._dut
        eos_hit, full_next, ends = Signal(), Signal(), Signal()
        if self._eos is not None:
            m.d.comb += eos_hit.eq(result == self._eos)
        m.d.comb += [full_next.eq(self.pos == self._context),
                     ends.eq((self.left == 1) | eos_hit | full_next),
                     self.abort.eq(dut.start | ResetSignal(allow_reset_less=True))]
        with m.State("PROMPT"), m.If(~self.abort & ~self._hold):
            m.d.comb += dut.i.ready.eq(1)
            with m.If(dut.i.valid):
                with m.If(dut.i.payload.token >= self._vocab):
                    m.d.sync += dut.error.eq(1)
                    m.next = "HALT"
                with m.Elif(self.pos == self._context):
                    m.d.sync += dut.context_full.eq(1)
                    m.next = "HALT"
                with m.Else():
                    go = dut.i.payload.last & (dut.max_new != 0)
                    m.d.sync += [self.token.eq(dut.i.payload.token), self.want.eq(go),
                                 self.left.eq(dut.max_new)]
                    m.next = "FEED"
        with m.State("EMIT"):
            m.d.comb += [dut.busy.eq(1), dut.o.valid.eq(result_valid & ~self.abort),
                         dut.o.payload.token.eq(result), dut.o.payload.last.eq(ends)]
            if result_ready is not None:
                # Not gated by `abort`: start and rst reset every register of the decoder at
                # that edge, the result's unit included, so a transfer it sees then is undone.
                # Kept out, `abort` (a net across the die) stays off the handshake path into
                # MatVec's output register, which was the critical path.
                m.d.comb += result_ready.eq(dut.o.ready)
            with m.If(dut.o.valid & dut.o.ready):
                m.d.sync += [self.left.eq(self.left - 1), self.token.eq(result)]
                with m.If(ends):
                    with m.If(full_next & (self.left != 1) & ~eos_hit):
                        m.d.sync += dut.context_full.eq(1)
                        m.next = "HALT"
                    with m.Else():
                        m.next = "PROMPT"
                with m.Else():
                    m.next = "FEED"
        with m.State("HALT"):
            pass                            # until start (or rst)
