"""Float32 reference model: Hugging Face ``LlamaForCausalLM`` inference in numpy.

It is what the quality of an integer model is measured against and what calibrates the static
activation scales of ``docs/numerics.md``. The arithmetic follows ``transformers``' eager float32
path operation by operation (RMSNorm as ``x * rsqrt(mean(x^2) + eps) * gamma``, RoPE, grouped KV
heads, causal softmax attention, SwiGLU ``w2(silu(w1 x) * w3 x)``), so logits agree with it to
float32 rounding. RoPE angles are computed in float64 and rounded once, as the integer tables are.

Calibration points: with ``observe=callback`` every forward pass calls ``callback(name, array)``
once per token and point, ``array`` being a fresh float32 1-D copy. The names, per layer ``i``:

=============================  ===============================================================
``embed``                      embedding row (the residual stream entering layer 0)
``layers.{i}.attn_in``         attention RMSNorm output times gamma: the input of wq/wk/wv
``layers.{i}.q`` / ``.k``      ``wq x`` / ``wk x`` before RoPE (``n_heads*head_dim`` / ``kv_dim``)
``layers.{i}.v``               ``wv x``
``layers.{i}.attn_out``        concatenated head outputs: the input of wo
``layers.{i}.resid_attn``      residual stream after the attention add
``layers.{i}.ffn_in``          MLP RMSNorm output times gamma: the input of w1/w3
``layers.{i}.gate`` / ``.up``  ``w1 x`` / ``w3 x``
``layers.{i}.hidden``          ``silu(gate) * up``: the input of w2
``layers.{i}.resid_ffn``       residual stream after the MLP add
``final_norm``                 final RMSNorm output times gamma: the input of the head
``logits``                     head output (``vocab_size``)
=============================  ===============================================================

Points come in computation order; when several tokens are processed at once
(:meth:`FloatModel.logits_for`) each point is reported for every token, in token order, before
the next point.
"""

import numpy as np

from ..errors import HardwireError
from ..gen.model import LoadedModel, check_weights

__all__ = ["FloatModel", "observe_points", "LAYER_POINTS", "rope_angles"]

#: Per-layer calibration points, ``layers.{i}.<point>``, in computation order.
LAYER_POINTS = ("attn_in", "q", "k", "v", "attn_out", "resid_attn", "ffn_in", "gate", "up",
                "hidden", "resid_ffn")


def observe_points(spec):
    """Every name :class:`FloatModel` passes to ``observe``, in computation order."""
    names = ["embed"]
    for i in range(spec.n_layers):
        names += [f"layers.{i}.{p}" for p in LAYER_POINTS]
    return names + ["final_norm", "logits"]


def rope_angles(spec, n_pos):
    """``cos`` and ``sin`` of ``p * theta^(-2j/head_dim)``, float32 ``[n_pos, head_dim/2]``.

    Computed in float64 and rounded once to float32.
    """
    half = spec.head_dim // 2
    inv_freq = float(spec.rope_theta) ** (-2.0 * np.arange(half, dtype=np.float64) / spec.head_dim)
    angles = np.arange(n_pos, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _rms_norm(x, gamma, eps):
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return (x * (np.float32(1.0) / np.sqrt(var + np.float32(eps)))) * gamma


def _silu(x):
    with np.errstate(over="ignore"):      # exp(-x) -> inf for very negative x gives silu = -0
        return x / (np.float32(1.0) + np.exp(-x))


def _softmax(scores):
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


class FloatModel:
    """Float32 inference of a :class:`~hardwire.gen.model.LoadedModel` with a KV cache.

    ``FloatModel(loaded)``; :meth:`from_weights` builds one from a spec and a weight dictionary.
    The cache covers positions ``0 .. spec.max_seq_len - 1``; going past it raises
    :class:`~hardwire.errors.HardwireError`.
    """

    def __init__(self, model):
        if not isinstance(model, LoadedModel):
            raise TypeError(f"model must be a LoadedModel, not {model!r}")
        spec, w = model.spec, model.weights
        self._spec = spec
        self._source = model.source
        self._embed = w["embed"]
        self._head = w["embed"] if spec.tied_embeddings else w["head"]
        self._norm = w["norm"]
        self._layers = [{k: w[f"layers.{i}.{k}"] for k in ("attn_norm", "wq", "wk", "wv", "wo",
                                                           "ffn_norm", "w1", "w3", "w2")}
                        for i in range(spec.n_layers)]
        self._cos, self._sin = rope_angles(spec, spec.max_seq_len)
        shape = (spec.n_layers, spec.n_kv_heads, spec.max_seq_len, spec.head_dim)
        self._k_cache = np.zeros(shape, dtype=np.float32)
        self._v_cache = np.zeros(shape, dtype=np.float32)
        self._pos = 0

    @classmethod
    def from_weights(cls, spec, weights, *, source="weights"):
        """Build from a :class:`~hardwire.gen.model.ModelSpec` and canonical float32 weights."""
        check_weights(spec, weights, source)
        return cls(LoadedModel(spec=spec, weights=dict(weights), tokenizer=None, source=source,
                               format="float"))

    @property
    def spec(self):
        """The :class:`~hardwire.gen.model.ModelSpec` being run."""
        return self._spec

    @property
    def pos(self):
        """Number of positions held in the KV cache (the position of the next token)."""
        return self._pos

    def reset(self):
        """Start a new sequence (empties the KV cache)."""
        self._pos = 0

    def step(self, token, pos=None, observe=None):
        """Feed one token at ``pos`` (default: the next position) and return its float32 logits.

        ``pos`` may rewind into the cache (later positions are forgotten) but not skip ahead.
        Raises :class:`~hardwire.errors.HardwireError` past the context (``spec.max_seq_len``)
        or for a token id outside the vocabulary.
        """
        if pos is None:
            pos = self._pos
        if not isinstance(pos, (int, np.integer)) or not 0 <= pos <= self._pos:
            raise HardwireError(f"{self._source}: position {pos!r} is not in 0..{self._pos} "
                                f"(positions must be fed in order)")
        return self._forward(np.array([token]), int(pos), observe)[0]

    def logits_for(self, ids, observe=None):
        """Teacher-forced logits, float32 ``[len(ids), vocab]``, of ``ids`` as a new sequence.

        The KV cache is left holding ``ids``, so :meth:`step` can continue the sequence.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) == 0:
            raise HardwireError(f"{self._source}: logits_for needs a non-empty 1-D list of token "
                                f"ids, found shape {ids.shape}")
        self.reset()
        return self._forward(ids, 0, observe)

    def generate(self, prompt_ids, n_new, stop_at_eos=True):
        """Greedy decoding: the ``n_new`` tokens after ``prompt_ids`` (a new sequence).

        Argmax with the lowest index winning ties. With ``stop_at_eos`` the end-of-sequence token
        (``spec.eos_id``) ends the output and is its last element. The prompt plus the new tokens
        but the last must fit the context (``spec.max_seq_len``).
        """
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise HardwireError(f"{self._source}: generate needs at least one prompt token")
        if not isinstance(n_new, int) or n_new < 0:
            raise ValueError(f"n_new must be a non-negative integer, not {n_new!r}")
        if n_new == 0:
            return []
        needed = len(prompt) + n_new - 1
        if needed > self._spec.max_seq_len:
            raise HardwireError(
                f"{self._source}: {len(prompt)} prompt tokens + {n_new} new tokens need {needed} "
                f"positions, more than the context of {self._spec.max_seq_len} (max_seq_len)")
        logits = self.logits_for(prompt)[-1]
        out = []
        while True:
            token = int(np.argmax(logits))
            out.append(token)
            if len(out) == n_new or (stop_at_eos and token == self._spec.eos_id):
                return out
            logits = self.step(token)

    def _check_tokens(self, tokens, pos):
        spec = self._spec
        if pos + len(tokens) > spec.max_seq_len:
            raise HardwireError(
                f"{self._source}: position {pos + len(tokens) - 1} is past the context of "
                f"{spec.max_seq_len} tokens (max_seq_len): positions are 0..{spec.max_seq_len - 1}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise HardwireError(f"{self._source}: token ids must be integers, found {tokens.dtype}")
        bad = tokens[(tokens < 0) | (tokens >= spec.vocab_size)]
        if len(bad):
            raise HardwireError(f"{self._source}: token id {int(bad[0])} outside the vocabulary "
                                f"0..{spec.vocab_size - 1}")

    def _forward(self, tokens, pos, observe):
        """Run ``tokens`` at positions ``pos, pos+1, ...``; return logits ``[T, vocab]``."""
        self._check_tokens(tokens, pos)
        spec = self._spec
        n_tok, hd, half = len(tokens), spec.head_dim, spec.head_dim // 2
        group = spec.n_heads // spec.n_kv_heads
        end = pos + n_tok
        cos, sin = self._cos[pos:end, None, :], self._sin[pos:end, None, :]
        scale = np.float32(hd ** -0.5)
        # Token t may attend to cache positions 0..pos+t.
        causal = np.arange(end)[None, :] > (pos + np.arange(n_tok))[:, None]

        def emit(name, value):
            if observe is not None:
                for row in value.reshape(n_tok, -1):
                    observe(name, row.copy())

        def rope(v):                                      # v: [T, heads, hd]
            if spec.rope_pairing == "half":
                a, b = v[..., :half], v[..., half:]
                return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
            a, b = v[..., 0::2], v[..., 1::2]
            out = np.empty_like(v)
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
            return out

        x = self._embed[tokens]
        emit("embed", x)
        for i, layer in enumerate(self._layers):
            p = f"layers.{i}."
            xn = _rms_norm(x, layer["attn_norm"], spec.norm_eps)
            emit(p + "attn_in", xn)
            q, k, v = xn @ layer["wq"].T, xn @ layer["wk"].T, xn @ layer["wv"].T
            emit(p + "q", q)
            emit(p + "k", k)
            emit(p + "v", v)
            q = rope(q.reshape(n_tok, spec.n_heads, hd))
            self._k_cache[i, :, pos:end] = rope(k.reshape(n_tok, spec.n_kv_heads, hd)) \
                .transpose(1, 0, 2)
            self._v_cache[i, :, pos:end] = v.reshape(n_tok, spec.n_kv_heads, hd).transpose(1, 0, 2)
            keys = np.repeat(self._k_cache[i, :, :end], group, axis=0)     # [heads, end, hd]
            values = np.repeat(self._v_cache[i, :, :end], group, axis=0)
            scores = (q.transpose(1, 0, 2) @ keys.transpose(0, 2, 1)) * scale  # [heads, T, end]
            scores[:, causal] = -np.inf
            att = (_softmax(scores) @ values).transpose(1, 0, 2).reshape(n_tok, spec.q_dim)
            emit(p + "attn_out", att)
            x = x + att @ layer["wo"].T
            emit(p + "resid_attn", x)
            xn = _rms_norm(x, layer["ffn_norm"], spec.norm_eps)
            emit(p + "ffn_in", xn)
            gate, up = xn @ layer["w1"].T, xn @ layer["w3"].T
            emit(p + "gate", gate)
            emit(p + "up", up)
            hidden = _silu(gate) * up
            emit(p + "hidden", hidden)
            x = x + hidden @ layer["w2"].T
            emit(p + "resid_ffn", x)
        xn = _rms_norm(x, self._norm, spec.norm_eps)
        emit("final_norm", xn)
        logits = xn @ self._head.T
        emit("logits", logits)
        self._pos = end
        return logits
