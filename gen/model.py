"""The framework-neutral model description every front end produces.

A front end returns a :class:`LoadedModel`: the architecture (:class:`ModelSpec`), float weights
under the canonical names of :func:`tensor_names`, a tokenizer, and any block-quantized tensors the
file already held in a format that maps exactly onto our integer scheme (:class:`BlockQuantized`).

Canonical orientation is PyTorch ``Linear``: every matrix is ``[out_features, in_features]``.
RoPE pairs are either ``"half"`` (Hugging Face ``rotate_half``: element i pairs with i + head_dim/2)
or ``"interleaved"`` (llama2.c/GGUF: 2i pairs with 2i+1), per head.
"""

from dataclasses import dataclass, field, fields

import numpy as np

from ..errors import ModelFormatError

__all__ = ["ModelSpec", "BlockQuantized", "LoadedModel", "Tokenizer", "tensor_names",
           "iter_tensor_names", "first_missing", "tensor_shapes", "check_weights",
           "check_finite", "MAX_DIMENSION"]

ROPE_PAIRINGS = ("half", "interleaved")
LAYER_TENSORS = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w3", "w2")
MAX_DIMENSION = 1 << 24   # any architecture number above this is a corrupt or hostile file


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a Llama-style decoder (all dimensions in elements)."""
    name: str
    dim: int                 # hidden size d
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int            # usually dim // n_heads
    ffn_dim: int             # SwiGLU hidden size
    vocab_size: int
    max_seq_len: int         # context the model was trained for
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied_embeddings: bool = False
    rope_pairing: str = "half"
    bos_id: int | None = None
    eos_id: int | None = None

    def __post_init__(self):
        for f in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size",
                  "max_seq_len"):
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) \
                    or not 0 < value <= MAX_DIMENSION:
                raise ModelFormatError(self.name, "must be a positive integer", field=f,
                                       expected=f"an integer in 1..{MAX_DIMENSION}",
                                       found=repr(value))
        if self.n_heads % self.n_kv_heads:
            raise ModelFormatError(self.name, "n_heads must be a multiple of n_kv_heads",
                                   field="n_kv_heads", expected=f"a divisor of {self.n_heads}",
                                   found=self.n_kv_heads)
        if self.head_dim % 2:
            raise ModelFormatError(self.name, "RoPE needs an even head dimension",
                                   field="head_dim", expected="an even number", found=self.head_dim)
        if self.rope_pairing not in ROPE_PAIRINGS:
            raise ModelFormatError(self.name, "unknown RoPE pairing", field="rope_pairing",
                                   expected=" or ".join(ROPE_PAIRINGS), found=self.rope_pairing)
        for f in ("bos_id", "eos_id"):
            value = getattr(self, f)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ModelFormatError(self.name, "token id outside the vocabulary", field=f,
                                       expected=f"0..{self.vocab_size - 1}", found=value)

    @property
    def q_dim(self):
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_dim

    @property
    def n_params(self):
        return sum(int(np.prod(s)) for s in tensor_shapes(self).values())

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data, *, source="model"):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelFormatError(source, "unknown architecture field", field=unknown[0],
                                   expected=f"one of {sorted(known)}", found=unknown[0])
        return cls(**data)


def iter_tensor_names(spec):
    """Canonical tensor names in a fixed order (the order of ROMs, reports and files), lazily."""
    yield "embed"
    for i in range(spec.n_layers):
        p = f"layers.{i}."
        for n in LAYER_TENSORS:
            yield p + n
    yield "norm"
    if not spec.tied_embeddings:
        yield "head"


def tensor_names(spec):
    """Canonical tensor names in a fixed order (the order of ROMs, reports and files)."""
    return list(iter_tensor_names(spec))


def first_missing(spec, present):
    """The first canonical name of ``spec`` for which ``present(name)`` is false, or None.

    Stops at the first gap, so a file that claims millions of layers costs as many checks as it
    holds tensors: front ends call it before building anything per tensor."""
    for name in iter_tensor_names(spec):
        if not present(name):
            return name
    return None


def tensor_shapes(spec):
    """Expected shape of every canonical tensor (``w1`` gate, ``w3`` up, ``w2`` down)."""
    d, f, v = spec.dim, spec.ffn_dim, spec.vocab_size
    per_layer = {"attn_norm": (d,), "wq": (spec.q_dim, d), "wk": (spec.kv_dim, d),
                 "wv": (spec.kv_dim, d), "wo": (d, spec.q_dim), "ffn_norm": (d,),
                 "w1": (f, d), "w3": (f, d), "w2": (d, f)}
    shapes = {"embed": (v, d)}
    for i in range(spec.n_layers):
        shapes.update({f"layers.{i}.{k}": s for k, s in per_layer.items()})
    shapes["norm"] = (d,)
    if not spec.tied_embeddings:
        shapes["head"] = (v, d)
    return shapes


@dataclass(frozen=True)
class BlockQuantized:
    """A tensor the file stores as integers times one scale per block of ``group_size`` inputs.

    ``values`` is ``int8 [out, in]`` within ``[-2**(bits-1), 2**(bits-1) - 1]`` (ternary: bits=2,
    values in {-1, 0, 1}); ``scales`` is ``float32 [out, in // group_size]``; the real weight is
    ``values * scales[:, j // group_size]``. ``source_type`` names the file's format (e.g. "Q4_0").
    """
    values: np.ndarray
    scales: np.ndarray
    bits: int
    group_size: int
    source_type: str

    def dequantize(self):
        return (self.values.astype(np.float32)
                * np.repeat(self.scales, self.group_size, axis=1)).astype(np.float32)


class Tokenizer:
    """Text <-> token ids. Front ends subclass it; ``pieces`` is the decoded text of every id."""

    def __init__(self, pieces):
        self.pieces = list(pieces)

    @property
    def vocab_size(self):
        return len(self.pieces)

    def encode(self, text):
        raise NotImplementedError

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


@dataclass
class LoadedModel:
    """What a front end returns: architecture, float weights, tokenizer and kept block formats.

    ``weights`` maps every name of :func:`tensor_names` to a float32 array of the shape in
    :func:`tensor_shapes`. ``block_quantized`` maps a subset of names to the integer form the file
    held, which the quantizer keeps instead of re-quantizing. ``source`` is the path it came from.
    """
    spec: ModelSpec
    weights: dict
    tokenizer: Tokenizer | None
    source: str
    format: str
    block_quantized: dict = field(default_factory=dict)

    def __post_init__(self):
        check_weights(self.spec, self.weights, self.source)


def check_weights(spec, weights, source):
    """Refuse missing, extra, misshapen or non-finite tensors with the exact name and shapes."""
    shapes = tensor_shapes(spec)
    for name, shape in shapes.items():
        if name not in weights:
            raise ModelFormatError(source, "tensor missing", field=name, expected=shape,
                                   found="nothing")
        array = weights[name]
        if tuple(array.shape) != shape:
            raise ModelFormatError(source, "tensor has the wrong shape", field=name,
                                   expected=shape, found=tuple(array.shape))
        if array.dtype != np.float32:
            raise ModelFormatError(source, "tensor must be float32 after loading", field=name,
                                   expected="float32", found=array.dtype)
        check_finite(array, source, name)
    extra = sorted(set(weights) - set(shapes))
    if extra:
        raise ModelFormatError(source, "unexpected tensor", field=extra[0],
                               expected="only canonical names", found=extra[0])


def check_finite(array, source, name):
    """Refuse an array holding NaN or infinities, naming the count and the first index."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        first = array[where]
        raise ModelFormatError(source, f"tensor holds {int(bad.sum())} NaN/Inf values, the "
                               f"first at index {list(where)}", field=name,
                               expected="finite numbers", found=repr(float(first)))
