"""The golden integer model: a :class:`~hardwire.gen.quantized_model.QuantizedModel` run token by
token with the operations of :mod:`hardwire.sim.golden_ops` (``docs/numerics.md``), nothing else.

It is the oracle the hardware is proven against, bit for bit: logits, tokens and, through
``trace``, every intermediate of a step.
"""

import operator

import numpy as np

from ..errors import HardwireError
from . import golden_ops as ops

__all__ = ["GoldenModel", "TRACE_LAYER_POINTS"]

TRACE_LAYER_POINTS = ("attn_in", "q", "k", "v", "attn_out", "wo", "resid_attn", "ffn_in", "gate",
                      "up", "hidden", "w2", "resid_ffn")


class _Linear:
    """A :class:`QLinear` with its arrays widened to int64 once (golden_ops would on every call)."""

    def __init__(self, q):
        self.w = q.values.astype(np.int64)
        self.g = None if q.group_mult is None else q.group_mult.astype(np.int64)
        self.size = q.group_size
        self.M, self.s, self.bits = q.M, q.shift, q.out_bits

    def __call__(self, x):
        return ops.linear(x, self.w, self.M, self.s, self.bits, group_mult=self.g,
                          group_size=self.size)


class GoldenModel:
    """Integer inference of ``qm`` with a KV cache of ``qm.context`` positions.

    :meth:`step` feeds one token at the next position and returns int64 logits ``[vocab]``
    (real logits ≈ ``logits * qm.s_logit``).
    """

    def __init__(self, qm):
        self._qm = qm
        spec = qm.spec
        self._spec = spec
        self._embed = _Linear(qm.embed)
        self._head = _Linear(qm.head)
        self._layers = []
        for layer in qm.layers:
            self._layers.append({
                **{k: _Linear(getattr(layer, k)) for k in ("wq", "wk", "wv", "wo", "w1", "w3",
                                                           "w2")},
                "attn_norm": layer.attn_norm, "ffn_norm": layer.ffn_norm,
                "M_att": layer.M_att, "s_att": layer.s_att, "silu": layer.silu.astype(np.int64),
                "M_h": layer.M_h, "s_h": layer.s_h})
        self._rsqrt = qm.rsqrt.astype(np.int64)
        self._exp2 = qm.exp2.astype(np.int64)
        self._cos = qm.rope_cos.astype(np.int64)
        self._sin = qm.rope_sin.astype(np.int64)
        shape = (spec.n_layers, qm.context, spec.kv_dim)
        self._k = np.zeros(shape, dtype=np.int64)
        self._v = np.zeros(shape, dtype=np.int64)
        self._pos = 0

    @property
    def qm(self):
        return self._qm

    @property
    def pos(self):
        """Tokens seen since :meth:`reset`: the position of the next token."""
        return self._pos

    def reset(self):
        """Start a new sequence (empties the KV cache)."""
        self._pos = 0

    def _norm(self, x, q):
        return ops.rmsnorm(x, q.gain, q.shift, q.eps_int, self._rsqrt)

    def step(self, token, trace=None):
        """Feed ``token`` at position :attr:`pos`; return int64 logits ``[vocab]``.

        ``trace``, a dict, receives every intermediate as int64 arrays: "embed" (the residual
        after the embedding), per layer ``i`` "layers.{i}.{point}" for the points of
        ``TRACE_LAYER_POINTS`` ("q"/"k" after RoPE, "attn_out" the heads' output, "wo"/"w2" the
        matrix outputs before the residual add), "final_norm" and "logits".

        Raises :class:`HardwireError` for a token outside the vocabulary or a full context.
        """
        spec = self._spec
        try:
            if isinstance(token, bool):
                raise TypeError
            token = operator.index(token)
        except TypeError:
            raise HardwireError(f"token id must be an integer, not {token!r}") from None
        if not 0 <= token < spec.vocab_size:
            raise HardwireError(f"token id {token} is outside the vocabulary "
                                f"(expected 0..{spec.vocab_size - 1})")
        pos = self._pos
        if pos >= self._qm.context:
            raise HardwireError(f"context full: all {self._qm.context} positions hold tokens "
                                f"(reset to start a new sequence)")
        record = (lambda name, value: trace.__setitem__(name, value)) if trace is not None \
            else (lambda name, value: None)
        e = self._embed
        x = ops.embed(token, e.w, e.M, e.s, group_mult=e.g, group_size=e.size)
        record("embed", x)
        for i, layer in enumerate(self._layers):
            p = f"layers.{i}."
            xn = self._norm(x, layer["attn_norm"])
            record(p + "attn_in", xn)
            q = ops.rope(layer["wq"](xn), pos, self._cos, self._sin, spec.n_heads,
                         spec.rope_pairing)
            k = ops.rope(layer["wk"](xn), pos, self._cos, self._sin, spec.n_kv_heads,
                         spec.rope_pairing)
            v = layer["wv"](xn)
            record(p + "q", q)
            record(p + "k", k)
            record(p + "v", v)
            self._k[i, pos] = k
            self._v[i, pos] = v
            att = ops.attention(q, self._k[i, :pos + 1], self._v[i, :pos + 1], spec.n_heads,
                                spec.n_kv_heads, layer["M_att"], layer["s_att"], self._exp2)
            record(p + "attn_out", att)
            y = layer["wo"](att)
            record(p + "wo", y)
            x = ops.residual_add(x, y)
            record(p + "resid_attn", x)
            xn = self._norm(x, layer["ffn_norm"])
            record(p + "ffn_in", xn)
            gate, up = layer["w1"](xn), layer["w3"](xn)
            record(p + "gate", gate)
            record(p + "up", up)
            hid = ops.swiglu(gate, up, layer["silu"], layer["M_h"], layer["s_h"])
            record(p + "hidden", hid)
            y = layer["w2"](hid)
            record(p + "w2", y)
            x = ops.residual_add(x, y)
            record(p + "resid_ffn", x)
        xn = self._norm(x, self._qm.norm)
        record("final_norm", xn)
        logits = self._head(xn)
        record("logits", logits)
        self._pos = pos + 1
        return logits

    def logits_for(self, ids):
        """Teacher-forced int64 logits ``[len(ids), vocab]`` of ``ids`` as a new sequence."""
        self.reset()
        return np.stack([self.step(t) for t in ids]) if len(ids) else \
            np.zeros((0, self._spec.vocab_size), dtype=np.int64)

    def generate(self, prompt_ids, n_new, *, stop_at_eos=True):
        """Greedy decoding of a new sequence: the up to ``n_new`` tokens after ``prompt_ids``.

        The prompt fills the KV cache; each new token is the argmax of the logits (lowest index
        wins ties) and is fed back. With ``stop_at_eos`` the end-of-sequence token
        (``spec.eos_id``) ends the output and is its last element. The prompt plus all new tokens
        but the last must fit the context; otherwise :class:`HardwireError` names the limit.
        """
        prompt = list(prompt_ids)
        if not prompt:
            raise HardwireError("generate needs at least one prompt token")
        if not isinstance(n_new, int) or isinstance(n_new, bool) or n_new < 0:
            raise HardwireError(f"the number of new tokens must be a non-negative integer, "
                                f"not {n_new!r}")
        if n_new == 0:
            return []
        needed = len(prompt) + n_new - 1
        if needed > self._qm.context:
            raise HardwireError(f"{len(prompt)} prompt tokens + {n_new} new tokens need {needed} "
                                f"positions, more than the context of {self._qm.context}")
        self.reset()
        for t in prompt:
            logits = self.step(t)
        out = []
        while True:
            token = ops.argmax(logits)
            out.append(token)
            if len(out) == n_new or (stop_at_eos and token == self._spec.eos_id):
                return out
            logits = self.step(token)
