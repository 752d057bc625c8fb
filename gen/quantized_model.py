"""``QuantizedModel``: every integer and table of a quantized decoder, the single source of truth.

The quantizer (:mod:`hardwire.gen.quantize`) builds it, the golden model
(:mod:`hardwire.sim.golden`) and the hardware generator read it, :mod:`hardwire.gen.native` stores
it. Nothing downstream re-derives a number: the arithmetic on these fields is ``docs/numerics.md``.

Arrays are read-only numpy integer arrays; every other field is a plain Python ``int``, ``float``,
``str`` or ``None``. Float fields (``row_scale``, ``in_scale``, ``out_scale``, ``scales``) are the
real scales the integers came from; they are for reports and never enter the integer arithmetic.
"""

from dataclasses import dataclass, field

import numpy as np

from .model import ModelSpec, Tokenizer, tensor_names

__all__ = ["QLinear", "QNorm", "QLayer", "QuantizedModel", "weight_range", "WEIGHT_BITS",
           "M_BITS", "SHIFT_BITS", "GROUP_MULT_BITS"]

WEIGHT_BITS = (8, 5, 4, 2)   # 2 = ternary {-1, 0, 1}
M_BITS = 15                  # a row multiplier M is 0 or in [2^14, 2^15): 15 bits unsigned
SHIFT_BITS = 6               # a row shift is in 1..62
GROUP_MULT_BITS = 16         # group multipliers are signed, |g| <= 2^14


def weight_range(bits):
    """``(lo, hi)`` of the integer weights a ``bits``-bit tensor may hold (ternary: bits=2)."""
    if bits == 2:
        return -1, 1
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {WEIGHT_BITS}, not {bits!r}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _frozen(array, dtype):
    array = np.ascontiguousarray(array, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class QLinear:
    """One matrix (or the embedding table) with its requantization constants.

    ``values``: int8 ``[out, in]``; ``bits``: 8, 5, 4 or 2 (ternary); ``group_size``: inputs per
    scale group, ``None`` for one scale per row; ``group_mult``: int16 ``[out, n_groups]``
    (``|g| <= 2^14``, signed because file formats may carry negative block scales) or ``None``;
    ``M``, ``shift``: int64 ``[out]`` (``y = requant(acc, M, shift, out_bits)``); ``out_bits``: 8
    or 16; ``source_format``: "int8", "int4", "ternary" or the GGUF block type kept.
    Reports: ``row_scale`` float64 ``[out]`` (real weight = ``values * g * 2^-14 * row_scale``,
    or ``values * row_scale`` per row), ``in_scale`` and ``out_scale`` (embedding: ``in_scale=1``).
    """
    values: np.ndarray
    bits: int
    group_size: int | None
    group_mult: np.ndarray | None
    M: np.ndarray
    shift: np.ndarray
    out_bits: int
    source_format: str
    row_scale: np.ndarray
    in_scale: float
    out_scale: float

    def __post_init__(self):
        object.__setattr__(self, "values", _frozen(self.values, np.int8))
        if self.group_mult is not None:
            object.__setattr__(self, "group_mult", _frozen(self.group_mult, np.int16))
        object.__setattr__(self, "M", _frozen(self.M, np.int64))
        object.__setattr__(self, "shift", _frozen(self.shift, np.int64))
        object.__setattr__(self, "row_scale", _frozen(self.row_scale, np.float64))

    @property
    def out_features(self):
        return self.values.shape[0]

    @property
    def in_features(self):
        return self.values.shape[1]

    @property
    def n_groups(self):
        """Scale groups per row (1 without group multipliers; the last group may be shorter)."""
        return 1 if self.group_mult is None else self.group_mult.shape[1]

    @property
    def acc_bits(self):
        """Signed accumulator width (``docs/numerics.md``): ``bits(n 2^14)+1``, grouped
        ``bits(n 2^28)+1``."""
        bound = self.in_features << (14 if self.group_mult is None else 28)
        return bound.bit_length() + 1

    def rom_bits(self):
        """Constant bits: weights at ``bits`` each, group multipliers, per-row ``M`` and shift."""
        total = self.values.size * self.bits + self.out_features * (M_BITS + SHIFT_BITS)
        if self.group_mult is not None:
            total += self.group_mult.size * GROUP_MULT_BITS
        return total


@dataclass(frozen=True, eq=False)
class QNorm:
    """An RMSNorm: ``gain`` int16 ``[d]``, common ``shift`` and ``eps_int`` (docs/numerics.md)."""
    gain: np.ndarray
    shift: int
    eps_int: int
    in_scale: float
    out_scale: float

    def __post_init__(self):
        object.__setattr__(self, "gain", _frozen(self.gain, np.int16))

    def rom_bits(self):
        return self.gain.size * 16


@dataclass(frozen=True, eq=False)
class QLayer:
    """One decoder layer: norms, matrices, the softmax multiplier ``(M_att, s_att)``, the per-layer
    ``silu`` table (int8 ``[256]``, index ``gate + 128``) and the SwiGLU requant ``(M_h, s_h)``."""
    attn_norm: QNorm
    wq: QLinear
    wk: QLinear
    wv: QLinear
    wo: QLinear
    M_att: int
    s_att: int
    ffn_norm: QNorm
    w1: QLinear
    w3: QLinear
    w2: QLinear
    silu: np.ndarray
    M_h: int
    s_h: int

    def __post_init__(self):
        object.__setattr__(self, "silu", _frozen(self.silu, np.int8))


LAYER_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")
LAYER_NORMS = ("attn_norm", "ffn_norm")


@dataclass(frozen=True, eq=False)
class QuantizedModel:
    """A whole quantized decoder.

    ``spec``: the architecture; ``weight_format``: "int8", "int4", "ternary", a kept GGUF block
    type, or "mixed"; ``group_size``: requested group size (``None``: per row); ``context``: the
    hardware's maximum context (KV cache depth, RoPE table rows); ``embed``: the embedding as a
    :class:`QLinear` whose rows requantize to the int16 residual (``M``/``shift`` per token);
    ``layers``; ``norm``: the final norm; ``head``: the LM head (when ``spec.tied_embeddings`` it
    shares ``values`` and ``group_mult`` with ``embed``, with its own ``M``/``shift``);
    ``rope_cos``/``rope_sin``: int16 ``[context, head_dim/2]`` Q1.14; ``rsqrt``: uint16 ``[768]``;
    ``exp2``: uint16 ``[256]``; ``scales``: calibrated activation scales by point name ("resid",
    "logits", "final_norm", "layers.{i}.attn_in" ...); ``calibration``: what calibrated them;
    ``tokenizer``: carried along for text in/out (not part of the numerics).
    """
    spec: ModelSpec
    weight_format: str
    group_size: int | None
    context: int
    embed: QLinear
    layers: tuple
    norm: QNorm
    head: QLinear
    rope_cos: np.ndarray
    rope_sin: np.ndarray
    rsqrt: np.ndarray
    exp2: np.ndarray
    scales: dict
    calibration: str
    tokenizer: Tokenizer | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "rope_cos", _frozen(self.rope_cos, np.int16))
        object.__setattr__(self, "rope_sin", _frozen(self.rope_sin, np.int16))
        object.__setattr__(self, "rsqrt", _frozen(self.rsqrt, np.uint16))
        object.__setattr__(self, "exp2", _frozen(self.exp2, np.uint16))
        object.__setattr__(self, "scales", dict(self.scales))

    @property
    def s_r(self):
        """Scale of the int16 residual stream."""
        return self.scales["resid"]

    @property
    def s_logit(self):
        """Scale of the int16 logits: real logits ≈ integer logits × ``s_logit``."""
        return self.head.out_scale

    def linears(self):
        """Every matrix by canonical name, in :func:`~hardwire.gen.model.tensor_names` order,
        ending with "head" (also when tied: the head is its own unit sharing the embed values)."""
        out = {"embed": self.embed}
        for i, layer in enumerate(self.layers):
            for k in LAYER_LINEARS:
                out[f"layers.{i}.{k}"] = getattr(layer, k)
        out["head"] = self.head
        return out

    def norms(self):
        """Every RMSNorm by canonical name."""
        out = {}
        for i, layer in enumerate(self.layers):
            for k in LAYER_NORMS:
                out[f"layers.{i}.{k}"] = getattr(layer, k)
        out["norm"] = self.norm
        return out

    def rom_bits(self):
        """Constant bits per canonical tensor name (a tied "head" counts only its ``M``/shift),
        plus "tables" (RoPE, RSQRT, EXP2 and the SILU tables)."""
        linears, norms = self.linears(), self.norms()
        out = {}
        for name in tensor_names(self.spec):
            out[name] = linears[name].rom_bits() if name in linears else norms[name].rom_bits()
        if self.spec.tied_embeddings:
            out["head"] = self.head.out_features * (M_BITS + SHIFT_BITS)
        out["tables"] = (16 * (self.rope_cos.size + self.rope_sin.size + self.rsqrt.size
                               + self.exp2.size) + 8 * 256 * len(self.layers))
        return out
