"""``HardwareConfig`` and the translation of a ``QuantizedModel`` into plain unit parameters.

:mod:`hardwire.hdl` never imports numpy or :mod:`hardwire.gen`: :func:`decoder_params` turns every
constant a decoder needs into Python ``int``/``tuple``/``str`` values, one dict per unit, which
:class:`hardwire.hdl.decoder.Decoder` elaborates as they are.

Before building anything :func:`check_bounds` refuses a design that would break a bound, with a
:class:`ConfigError` naming it (``expected <= X, found Y``):

- accumulators: every matrix has at most :data:`MAX_INPUTS` inputs and the RMSNorm at most as many
  elements (``docs/numerics.md``: ``acc * M < 2^61``, RMSNorm shift ``<= 62``);
- context: at most the model's trained context ``spec.max_seq_len`` (RoPE positions beyond it
  were never trained), the quantized model's RoPE tables, and :data:`MAX_CONTEXT`;
- ROM: at most :data:`MAX_ROM_BITS` constant bits (weights, multipliers, tables).
"""

import operator
from dataclasses import dataclass

from ..errors import ConfigError
from .quantize import MAX_CONTEXT, MAX_INPUTS

__all__ = ["HardwareConfig", "decoder_params", "unit_lanes", "check_context", "check_bounds",
           "rom_bits", "MAX_INPUTS", "MAX_CONTEXT", "MAX_ROM_BITS"]

# What the Amaranth -> Verilog flow can build: it holds every ROM word as a Python int and grows
# by about 0.25 MB and 0.08 s per ROM kbit (kjv, 1.76 Mbit: 136 s and 469 MB peak), so 2^26 bits
# (8 MB of int8 weights) already take some 16 GB and 1.5 h.
MAX_ROM_BITS = 1 << 26


def _positive(name, value, *, optional=False):
    if optional and value is None:
        return None
    what = "a positive integer or None" if optional else "a positive integer"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {what}, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be {what}, not {value!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be {what}, not {value!r}")
    return value


@dataclass(frozen=True)
class HardwareConfig:
    """How a decoder is built.

    ``lanes``: multiply–accumulates per cycle (per row of it) of the matrix unit, which every
    matrix shares, and of the attention unit, and elements per cycle of the others, clipped
    per unit to what it can use (:func:`unit_lanes`);
    ``vector_lanes``: elements per cycle of the element-wise units (RMSNorm, RoPE, SwiGLU,
    embedding, argmax, the attention's output stage) when they should have fewer than ``lanes``
    (``None``: the same as ``lanes``). They take a few percent of the cycles but most of the
    multipliers, so fewer lanes there cost little time and much area. The residual adds, which
    have no multiplier, always take ``lanes``;
    ``matrix_rows``: rows the matrix unit works on at once (``matrix_rows * lanes``
    multipliers), for matrices with fewer inputs than the lanes would use; ``context``:
    KV cache depth, ``None`` for the quantized model's own ``context`` (it may be smaller, never
    larger: the RoPE tables stop there).

    Raises :class:`ConfigError` ("lanes must be a positive integer, not ...", "context must be a
    positive integer or None, not ...").
    """
    lanes: int
    context: int | None = None
    vector_lanes: int | None = None
    matrix_rows: int = 1

    def __post_init__(self):
        object.__setattr__(self, "lanes", _positive("lanes", self.lanes))
        object.__setattr__(self, "matrix_rows", _positive("matrix_rows", self.matrix_rows))
        object.__setattr__(self, "vector_lanes",
                           _positive("vector_lanes", self.vector_lanes, optional=True))
        object.__setattr__(self, "context", _positive("context", self.context, optional=True))


def unit_lanes(lanes, length, *, segment=None):
    """Lanes a unit of ``length`` elements gets from a requested ``lanes``: ``min(lanes,
    length)``; with ``segment`` (RoPE: pairs per head), at most ``segment`` or a multiple of it."""
    lanes = min(lanes, length)
    if segment is not None and lanes > segment:
        lanes -= lanes % segment
    return lanes


def _ints(array):
    return tuple(int(v) for v in array.reshape(-1))


def _rows(array):
    return tuple(tuple(int(v) for v in row) for row in array)


def _linear(name, qlins, lanes):
    """One matvec of the rows of ``qlins`` stacked (each row keeps its own ``M``/``shift``)."""
    first = qlins[0]
    for q in qlins[1:]:
        if (q.group_size, q.group_mult is None, q.out_bits, q.in_features) != \
                (first.group_size, first.group_mult is None, first.out_bits, first.in_features):
            raise ConfigError(f"{name}: the fused matrices differ in group size, output bits or "
                              f"input size and cannot share one matrix-vector unit")
    n_in = first.in_features
    params = {
        "weights": sum((_rows(q.values) for q in qlins), ()),
        "bits": max(q.bits for q in qlins),
        "group_size": first.group_size if first.group_mult is not None else None,
        "group_mult": (sum((_rows(q.group_mult) for q in qlins), ())
                       if first.group_mult is not None else None),
        "M": sum((_ints(q.M) for q in qlins), ()),
        "shift": sum((_ints(q.shift) for q in qlins), ()),
        "out_bits": first.out_bits,
        # A chunk never spans two groups: at most group_size lanes.
        "lanes": unit_lanes(lanes, n_in if first.group_mult is None else first.group_size),
    }
    return params


def _norm(q, lanes):
    return {"gain": _ints(q.gain), "shift": int(q.shift), "eps_int": int(q.eps_int),
            "lanes": unit_lanes(lanes, q.gain.size)}


def check_context(spec, context=None, *, quantized_context=None):
    """The KV cache depth to build: ``context``, or the model's own (``quantized_context``, else
    ``spec.max_seq_len``) when it is ``None``. Raises :class:`ConfigError` when it exceeds the
    model's trained context, the quantized model's RoPE tables or :data:`MAX_CONTEXT`.

    Cheap (it reads only the spec): call it before quantizing, so that a huge context is refused
    before any table is built."""
    own = spec.max_seq_len if quantized_context is None else quantized_context
    context = own if context is None else _positive("context", context)
    if context > spec.max_seq_len:
        raise ConfigError(f"context must be at most the model's trained context (max_seq_len) "
                          f"{spec.max_seq_len}, not {context}: RoPE positions beyond it were "
                          f"never trained (expected <= {spec.max_seq_len}, found {context})")
    if quantized_context is not None and context > quantized_context:
        raise ConfigError(f"context must be at most the quantized model's context "
                          f"{quantized_context}, not {context}")
    if context > MAX_CONTEXT:
        raise ConfigError(f"context must be at most {MAX_CONTEXT}, not {context}: the softmax "
                          f"reciprocal floor(2^40 / P) would keep fewer than 9 bits (expected <= "
                          f"{MAX_CONTEXT}, found {context}); give a smaller --context")
    return context


def rom_bits(qm, context):
    """Constant bits of ``qm`` built with a KV cache of ``context`` positions (the RoPE tables
    hold ``context`` rows, not ``qm.context``)."""
    total = sum(qm.rom_bits().values())
    return total - 16 * (qm.rope_cos.size + qm.rope_sin.size) * (qm.context - context) \
        // max(qm.context, 1)


def check_bounds(qm, context):
    """Refuse, with :class:`ConfigError` naming the bound, a ``qm`` whose matrices have more than
    :data:`MAX_INPUTS` inputs (the requantization product ``acc * M`` would pass 2^61), whose
    RMSNorm is as wide, or whose ROM at ``context`` positions exceeds :data:`MAX_ROM_BITS`."""
    for name, q in qm.linears().items():
        if q.in_features > MAX_INPUTS:
            raise ConfigError(f"{name}: {q.in_features} inputs overflow the accumulator bound of "
                              f"docs/numerics.md (acc * M < 2^61) (expected <= {MAX_INPUTS}, "
                              f"found {q.in_features})")
    if qm.spec.dim > MAX_INPUTS:
        raise ConfigError(f"norm: {qm.spec.dim} elements overflow the RMSNorm shift bound of "
                          f"docs/numerics.md (expected <= {MAX_INPUTS}, found {qm.spec.dim})")
    bits = rom_bits(qm, context)
    if bits > MAX_ROM_BITS:
        raise ConfigError(f"{qm.spec.name}: {bits:,} ROM bits exceed what the compiler builds "
                          f"(expected <= {MAX_ROM_BITS:,}, found {bits:,}); use --weights int4 "
                          f"or ternary, or a smaller --context")


def decoder_params(qm, config):
    """Plain-int parameters of a whole decoder for :class:`hardwire.hdl.decoder.Decoder`.

    Returns a dict: "vocab", "dim", "context", "eos_id", "rsqrt", "exp2", "rope_cos",
    "rope_sin" (``[context][head_dim/2]``), "embed", "layers" (a tuple of dicts: "attn_norm",
    "qkv" (wq|wk|wv rows fused, all 8-bit outputs), "rope" (``n_heads + n_kv_heads`` heads: q and
    k share the tables), "attention", "wo", "ffn_norm", "w13" (w1 rows then w3 rows), "swiglu",
    "w2"), "norm", "head", "argmax" and "matrix_rows". A matvec dict holds "weights", "bits",
    "group_size", "group_mult", "M", "shift", "out_bits", "lanes".

    Raises :class:`ConfigError` for a context or a model beyond a bound (:func:`check_context`,
    :func:`check_bounds`) or matrices that cannot be fused.
    """
    if not isinstance(config, HardwareConfig):
        raise ConfigError(f"config must be a HardwareConfig, not {config!r}")
    spec, lanes = qm.spec, config.lanes
    vlanes = config.vector_lanes or lanes
    context = check_context(spec, config.context, quantized_context=qm.context)
    check_bounds(qm, context)
    half = spec.head_dim // 2
    layers = []
    for i, layer in enumerate(qm.layers):
        for k in ("wq", "wk", "wv", "w1", "w3"):
            if getattr(layer, k).out_bits != 8:
                raise ConfigError(f"layers.{i}.{k}: expected 8-bit outputs, found "
                                  f"{getattr(layer, k).out_bits}")
        rope_heads = spec.n_heads + spec.n_kv_heads
        layers.append({
            "attn_norm": _norm(layer.attn_norm, vlanes),
            "qkv": _linear(f"layers.{i}.wq|wk|wv", (layer.wq, layer.wk, layer.wv), lanes),
            "rope": {"n_heads": rope_heads, "pairing": spec.rope_pairing,
                     "lanes": unit_lanes(vlanes, rope_heads * half, segment=half)},
            "attention": {"n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads,
                          "head_dim": spec.head_dim, "M_att": int(layer.M_att),
                          "s_att": int(layer.s_att), "lanes": unit_lanes(lanes, spec.head_dim),
                          "out_lanes": unit_lanes(vlanes, spec.head_dim)},
            "wo": _linear(f"layers.{i}.wo", (layer.wo,), lanes),
            # No multiplier: the residual adds take `lanes`, whatever `vector_lanes` says.
            "residual": {"lanes": unit_lanes(lanes, spec.dim)},
            "ffn_norm": _norm(layer.ffn_norm, vlanes),
            "w13": _linear(f"layers.{i}.w1|w3", (layer.w1, layer.w3), lanes),
            "swiglu": {"silu_table": _ints(layer.silu), "M": int(layer.M_h), "s": int(layer.s_h),
                       "lanes": unit_lanes(vlanes, spec.ffn_dim)},
            "w2": _linear(f"layers.{i}.w2", (layer.w2,), lanes),
        })
    embed = qm.embed
    if embed.group_mult is not None:
        g = embed.group_size
        n_groups = embed.group_mult.shape[1]
        embed_lanes = unit_lanes(vlanes, n_groups * g, segment=g)
    else:
        embed_lanes = unit_lanes(vlanes, spec.dim)
    return {
        "vocab": spec.vocab_size,
        "dim": spec.dim,
        "context": context,
        "eos_id": spec.eos_id,
        "rsqrt": _ints(qm.rsqrt),
        "exp2": _ints(qm.exp2),
        "rope_cos": _rows(qm.rope_cos[:context]),
        "rope_sin": _rows(qm.rope_sin[:context]),
        "embed": {"table": _rows(embed.values), "M": _ints(embed.M), "s": _ints(embed.shift),
                  "group_mult": None if embed.group_mult is None else _rows(embed.group_mult),
                  "group_size": None if embed.group_mult is None else embed.group_size,
                  "lanes": embed_lanes},
        "layers": tuple(layers),
        "norm": _norm(qm.norm, vlanes),
        "head": _linear("head", (qm.head,), lanes),
        "argmax": {"lanes": unit_lanes(vlanes, spec.vocab_size)},
        "matrix_rows": config.matrix_rows,
    }
