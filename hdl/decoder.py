"""The whole decoder: token stream in, greedily generated token stream out."""

from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring

from .argmax import Argmax
from .embedding import Embedding
from .generation import GenerationLoop, decoder_signature, token_bits
from .layer import (
    DecoderLayer,
    layer_matrices,
    layer_norms,
    matvec_result,
    requant_matvec,
    stack_matrices,
    stack_norms,
)
from .rmsnorm import RMSNorm

__all__ = ["Decoder"]


class Decoder(wiring.Component):
    """Embedding → N × :class:`DecoderLayer` → final RMSNorm → head matvec → Argmax, with the
    greedy generation loop on chip. One token is in flight at a time, so one layer datapath
    serves all N layers: its output loops back to its input with the next layer's constants
    selected, in the same cycle (no bubble). For the same reason one :class:`MatVec`
    (``matrices``) computes every matrix–vector product, the layers' four and the LM head's,
    each matrix a bank of it: its ``lanes`` multipliers are the decoder's MAC array. Likewise
    one :class:`RMSNorm` (``norm``) computes every norm, the layers' two and the final one, each
    a bank of it.

    Parameters
    ----------
    params : dict
        :func:`hardwire.gen.hardware.decoder_params` of a quantized model.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"token": unsigned(token_bits), "last": 1})))``
        Prompt tokens. ``last`` marks the final prompt token; generation starts after it.
        ``token_bits = max(16, bit_length(vocab))``.
    o : ``Out(stream.Signature(<the same layout>)))``
        Generated tokens; ``last`` is high on the final one of a generation.
    max_new : ``In(16)``
        Limit on new tokens, sampled at the transfer of the ``last`` prompt token. 0 runs the
        prompt (fills the KV cache) and generates nothing.
    start : ``In(1)``
        Strobe: begins a new sequence at position 0, in any state. It is a synchronous reset of
        the whole decoder (every register of every unit; the KV caches need no clearing, since
        a sequence only reads the positions it wrote): it clears ``busy``, ``error`` and
        ``context_full``, abandons a partial prompt, and aborts a generation under way together
        with the token in the pipeline. In a cycle with ``start`` high neither stream transfers:
        ``i.ready`` and ``o.valid`` are low, so an output token that was valid but not yet taken
        is dropped, never delivered; every token taken from ``o`` before that cycle belongs to
        the aborted sequence. A prompt token offered in that cycle is not taken (it may stay
        offered and is taken as the new sequence's first token).
    busy : ``Out(1)``
        A token is in the pipeline or a generation is under way. ``i.ready`` is exactly
        ``~busy & ~error & ~context_full & ~start``; ``o.valid`` implies ``busy``.
    context_full : ``Out(1)``
        Sticky until ``start``. Set when a prompt token arrives with all ``context`` positions
        used (the token is taken off the stream and discarded), or when a generated token would
        have to be fed back at position ``context`` (it is emitted with ``last`` high and the
        generation stops short of ``max_new``; not when that token is ``eos_id``). Rises in the
        cycle after the transfer that raises it. Positions never wrap.
    error : ``Out(1)``
        Sticky until ``start``: a prompt token id ``>= vocab`` arrived; it is taken off the stream
        and discarded, never reaches the embedding ROM. Rises in the cycle after that transfer.

    After ``context_full`` or ``error`` the decoder halts: ``i.ready`` stays low until ``start``.
    The ``sync`` domain's reset does the same as ``start``, handshakes included.

    Protocol
    --------
    After reset (or ``start``) the decoder waits for prompt tokens at position 0. Each accepted
    token runs through the embedding and all layers at the next position (filling the KV
    caches); non-final prompt tokens skip the final norm, head and argmax. After the ``last``
    prompt token (with ``max_new > 0``) the decoder emits the argmax token on ``o`` and, unless
    it ends the generation, feeds it back as the next input on chip. The generation ends after
    ``max_new`` tokens, after emitting the model's ``eos_id`` (when it has one), or on
    ``context_full``; its final token carries ``last``. Then ``busy`` drops and the decoder takes
    prompt tokens again *continuing the same sequence* (the final generated token is not in the
    KV cache: send it back first to continue the text) until ``start`` begins a new one. The
    emitted tokens are exactly ``GoldenModel.generate(prompt, max_new)`` while the prompt plus
    all new tokens but the last fit the context.

    Timing
    ------
    :meth:`cycles_per_token` ``(pos)``: clock edges between consecutive output transfers when
    the token emitted first is fed back at position ``pos`` (``o`` always ready): the sum of the
    units' latencies along the chain plus one edge to feed the token back.
    :meth:`cycles_per_prompt_token` ``(pos)``: edges between consecutive input transfers of
    non-final prompt tokens (input always valid).
    Backpressure and idle cycles only add waiting: under any pattern, ``o.valid`` of the next
    token rises ``cycles_per_token(pos)`` edges after the transfer of the token fed back at
    ``pos`` (the ``last`` prompt token included), and ``i.ready`` rises
    ``cycles_per_prompt_token(pos)`` edges after the transfer of a non-final prompt token.
    """

    def __init__(self, *, params):
        p = params
        self._vocab, self._dim, self._context = p["vocab"], p["dim"], p["context"]
        self._eos = p["eos_id"]
        self.embed = Embedding(**p["embed"])
        # Banks: every layer's qkv, wo, w13, w2 (layer_matrices), then the head.
        self.matrices = requant_matvec({
            **stack_matrices([*layer_matrices(p["layers"]), p["head"]]),
            "rows_per_cycle": p.get("matrix_rows", 1)})
        self._head_bank = self.matrices.banks - 1
        # Banks: every layer's two norms (layer_norms), then the final norm.
        self.norm = RMSNorm(rsqrt_table=p["rsqrt"], banks=2 * len(p["layers"]) + 1,
                            **stack_norms([*layer_norms(p["layers"]), p["norm"]]))
        self._final_norm_bank = self.norm.banks - 1
        self.layer = DecoderLayer(layers=p["layers"], dim=self._dim, context=self._context,
                                  exp2=p["exp2"], rope_cos=p["rope_cos"],
                                  rope_sin=p["rope_sin"], matvec=self.matrices, norm=self.norm)
        self.argmax = Argmax(n=self._vocab, **p["argmax"])
        self._token_bits = token_bits(self._vocab)
        super().__init__(decoder_signature(self._vocab))

    @property
    def vocab(self):
        return self._vocab

    @property
    def context(self):
        return self._context

    @property
    def eos_id(self):
        return self._eos

    @property
    def n_layers(self):
        return self.layer.n_layers

    def _body_cycles(self, pos):
        return self.embed.latency + self.n_layers * self.layer.cycles(pos)

    def cycles_per_token(self, pos):
        """Clock edges per generated token fed back at position ``pos`` (see the docstring)."""
        return (1 + self._body_cycles(pos) + self.norm.latency
                + self.matrices.bank_latency(self._head_bank) + self.argmax.latency)

    def cycles_by_work(self, pos):
        """:meth:`cycles_per_token` ``(pos)`` split into what takes the cycles: "matrices" (the
        MAC array: every layer's four products and the head), "attention" (scores, softmax and
        values of every layer) and "vector" (the element-wise units, embedding, argmax and the
        feedback edge)."""
        matrices = (self.n_layers * self.layer.matrix_cycles
                    + self.matrices.bank_latency(self._head_bank))
        attention = self.n_layers * self.layer.attention.cycles(pos)
        return {"matrices": matrices, "attention": attention,
                "vector": self.cycles_per_token(pos) - matrices - attention}

    def cycles_per_prompt_token(self, pos):
        """Clock edges per non-final prompt token at position ``pos``."""
        return 2 + self._body_cycles(pos)

    def elaborate(self, platform):
        m = Module()
        m.submodules.embed = self.embed
        m.submodules.layer = layer = self.layer
        m.submodules.norm = self.norm
        m.submodules.matrices = mv = self.matrices
        m.submodules.argmax = self.argmax

        loop = GenerationLoop(self, vocab=self._vocab, context=self._context, eos_id=self._eos,
                              token_bits=self._token_bits)
        pos, token, want = loop.pos, loop.token, loop.want

        # Chain: embedding → layer 0 → layer 1 … → the final norm. The layer's output loops back
        # to its input until the last layer; it takes its own output in the cycle it leaves, so
        # `o.ready` is simply high while looping (no combinational path through `i.ready`).
        n_layers = self.n_layers
        looping = Signal()
        if n_layers > 1:
            layer_index = Signal(range(n_layers))
            m.d.comb += [layer.index.eq(layer_index), looping.eq(layer_index != n_layers - 1)]
            with m.If(layer.o.valid & layer.o.ready):
                m.d.sync += layer_index.eq(Mux(looping, layer_index + 1, 0))
        from_embed = self.embed.o.valid
        m.d.comb += [
            layer.i.valid.eq(from_embed | (layer.o.valid & looping)),
            self.embed.o.ready.eq(layer.i.ready),
            layer.i.payload.x.eq(Mux(from_embed, self.embed.o.payload.as_value(),
                                     layer.o.payload.x.as_value())),
            layer.i.payload.pos.eq(pos),
        ]
        # The shared norm's and the MAC array's two clients, never both waiting: the layer, and
        # the final norm then the head. `final` (set at the final norm's input transfer, cleared
        # at the layer's next request) routes both units' results back to whoever asked.
        norm = self.norm
        final, final_request = Signal(), Signal()
        m.d.comb += [
            norm.i.valid.eq(layer.norm_i.valid | final_request),
            norm.i.payload.eq(Mux(final_request, layer.o.payload.x, layer.norm_i.payload)),
            layer.norm_i.ready.eq(norm.i.ready),
            norm.bank.eq(Mux(final, self._final_norm_bank, layer.norm_bank)),
            layer.norm_o.valid.eq(norm.o.valid & ~final),
            layer.norm_o.payload.eq(norm.o.payload),
            norm.o.ready.eq(Mux(final, mv.i.ready, layer.norm_o.ready)),
        ]
        with m.If(norm.i.valid & norm.i.ready):
            m.d.sync += final.eq(final_request)
        head_x = Signal.like(mv.i.payload)
        m.d.comb += head_x.as_value()[:len(norm.o.payload.as_value())].eq(norm.o.payload)
        m.d.comb += [
            mv.i.valid.eq(layer.mv_i.valid | (norm.o.valid & final)),
            mv.i.payload.eq(Mux(final, head_x, layer.mv_i.payload.x)),
            mv.bank.eq(Mux(final, self._head_bank, layer.mv_i.payload.bank)),
            layer.mv_i.ready.eq(mv.i.ready),
            layer.mv_o.valid.eq(mv.o.valid & ~final),
            layer.mv_o.payload.eq(mv.o.payload),
            self.argmax.i.valid.eq(mv.o.valid & final),
            self.argmax.i.payload.eq(matvec_result(m, mv, mv.o.payload, self._head_bank,
                                                   mv.bank_out_bits(self._head_bank))),
            mv.o.ready.eq(Mux(final, self.argmax.i.ready, layer.mv_o.ready)),
        ]
        m.d.comb += self.embed.i.payload.eq(token)

        with m.FSM(name="control", init="PROMPT"):
            with m.State("FEED"):
                m.d.comb += [self.busy.eq(1), self.embed.i.valid.eq(1)]
                with m.If(self.embed.i.ready):
                    m.next = "LAYERS"
            with m.State("LAYERS"):
                m.d.comb += [self.busy.eq(1),
                             final_request.eq(layer.o.valid & want & ~looping),
                             layer.o.ready.eq(looping | ~want | norm.i.ready)]
                with m.If(layer.o.valid & layer.o.ready & ~looping):
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(want):
                        m.next = "EMIT"
                    with m.Else():
                        m.next = "PROMPT"
            # start (like rst) resets every register; in its cycle neither stream transfers.
            loop.states(m, result=self.argmax.o.payload, result_valid=self.argmax.o.valid,
                        result_ready=self.argmax.o.ready)
        return ResetInserter(self.start)(m)
