"""The quantizer: a float :class:`~hardwire.gen.model.LoadedModel` to a :class:`QuantizedModel`.

Follows ``docs/numerics.md`` step by step: weights to int8/int4/ternary per row or per group (or
GGUF block tensors kept as they are), group multipliers, static activation scales calibrated on
the float reference (:mod:`hardwire.gen.calibrate`), every requantization factor as a fixed-point
``(M, s)`` pair, RMSNorm gains, SiLU/RoPE/RSQRT/EXP2 tables. Same inputs give identical arrays.
"""

import math

import numpy as np

from ..errors import ConfigError, ModelFormatError
from ..sim import golden_ops as ops
from .calibrate import calibrate, calibration_sequences
from .model import LoadedModel
from .quantized_model import QLayer, QLinear, QNorm, QuantizedModel, weight_range

__all__ = ["quantize", "quantize_weight", "group_multipliers", "activation_scale",
           "norm_constants", "WEIGHT_FORMATS", "MAX_INPUTS"]

WEIGHT_FORMATS = {"int8": (8, 127), "int4": (4, 7), "ternary": (2, 1)}
MAX_INPUTS = 1 << 17          # accumulator bound of docs/numerics.md (acc * M < 2^61)
# The softmax reciprocal r = floor(2^40 / P) with P <= context * 2^15 (docs/numerics.md) keeps at
# least 9 significant bits up to here, more than the int8 value it scales.
MAX_CONTEXT = 1 << 16
MAX_NORM_SHIFT = 22           # keeps the RMSNorm shift <= 62 for d <= 2^17
MIN_NORM_SHIFT = -15
MAX_EPS_INT = 1 << 40
ONE = 1 << ops.GROUP_MULT_BITS


def activation_scale(absmax, bits):
    """``absmax / (2^(bits-1) - 1)``; a point never seen non-zero counts as ``absmax = 1``."""
    return (absmax if absmax > 0 else 1.0) / ((1 << (bits - 1)) - 1)


def quantize_weight(w, fmt, group_size=None):
    """``(values int8 [out, in], scales float64 [out, n_groups])`` of float ``w`` in ``fmt``.

    int8/int4: ``scale = absmax / Q``; ternary: ``scale = mean |w|`` (BitNet b1.58 absmean);
    ``values = clamp(round_half_up(w / scale), -Q, Q)``; a zero group has scale 0 and zero values.
    ``group_size=None`` means one group per row; the last group may be shorter.
    """
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(WEIGHT_FORMATS)}, not {fmt!r}")
    w = np.asarray(w, dtype=np.float64)
    out, n = w.shape
    size = n if group_size is None else min(group_size, n)
    n_groups = -(-n // size)
    pad = n_groups * size - n
    wp = np.abs(np.pad(w, ((0, 0), (0, pad)))).reshape(out, n_groups, size)
    _, q = WEIGHT_FORMATS[fmt]
    if fmt == "ternary":
        counts = np.full(n_groups, size, dtype=np.float64)
        counts[-1] = size - pad
        scales = wp.sum(axis=2) / counts
    else:
        scales = wp.max(axis=2) / q
    per_input = np.repeat(scales, size, axis=1)[:, :n]
    safe = np.where(per_input > 0, per_input, 1.0)
    values = np.clip(ops.round_half_up(w / safe), -q, q)
    values[per_input == 0] = 0
    return values.astype(np.int8), scales


def group_multipliers(scales):
    """``(g int64 [out, n_groups], smax float64 [out])``: ``smax = max_j |scale|`` and
    ``g = round_half_up(scale / smax * 2^14)`` (0 where ``smax`` is 0)."""
    scales = np.asarray(scales, dtype=np.float64)
    smax = np.abs(scales).max(axis=1)
    safe = np.where(smax > 0, smax, 1.0)
    g = ops.round_half_up(scales / safe[:, None] * ONE)
    return np.where(smax[:, None] > 0, g, 0), smax


def _multiplier(r, source, name, what):
    try:
        return ops.multiplier(r)
    except ValueError as e:
        raise ModelFormatError(source, f"{what}: requantization factor out of range ({e})",
                               field=name, expected="a factor in [2^-48, 2^14)",
                               found=repr(r)) from None


def _linear(name, values, scales, bits, group_size, fmt, s_x, s_y, out_bits, source):
    n = values.shape[1]
    if n > MAX_INPUTS:
        raise ModelFormatError(source, "too many inputs for the accumulator bound of "
                               "docs/numerics.md", field=name, expected=f"at most {MAX_INPUTS}",
                               found=n)
    if scales.shape[1] == 1 and (scales >= 0).all():
        group_mult, group_size = None, None
        smax, factor = scales[:, 0].astype(np.float64), 1.0
    else:
        group_mult, smax = group_multipliers(scales)
        factor = 1.0 / ONE
    Ms, shifts = [], []
    for o, row in enumerate(smax):
        M, s = _multiplier(float(s_x * row * factor / s_y), source, name, f"row {o}")
        Ms.append(M)
        shifts.append(s)
    return QLinear(values=values, bits=bits, group_size=group_size, group_mult=group_mult,
                   M=np.array(Ms, dtype=np.int64), shift=np.array(shifts, dtype=np.int64),
                   out_bits=out_bits, source_format=fmt, row_scale=smax, in_scale=float(s_x),
                   out_scale=float(s_y))


def norm_constants(gamma, s_r, s_n, eps):
    """``(G int64 [d], S, eps_int)`` of an RMSNorm (``docs/numerics.md``), unchecked."""
    gamma = np.asarray(gamma, dtype=np.float64)
    d = gamma.shape[0]
    base = gamma * math.sqrt(d) / s_n
    limit = 1 << 15

    def fits(S):
        return int(np.abs(ops.round_half_up(np.ldexp(base, S))).max()) < limit

    largest = float(np.abs(base).max())
    if largest == 0:
        S = MAX_NORM_SHIFT
    else:
        S = min(MAX_NORM_SHIFT, math.floor(math.log2(limit / largest)))
        while not fits(S):
            S -= 1
        while S < MAX_NORM_SHIFT and fits(S + 1):
            S += 1
    eps_int = max(1, math.floor(eps * d / (s_r * s_r) + 0.5))   # round_half_up, unbounded int
    return ops.round_half_up(np.ldexp(base, S)), S, eps_int


def _norm(name, gamma, s_r, s_n, eps, source):
    G, S, eps_int = norm_constants(gamma, s_r, s_n, eps)
    if S < MIN_NORM_SHIFT:
        raise ModelFormatError(source, "norm gain too large for int16 at the calibrated output "
                               "scale", field=name, expected=f"shift S >= {MIN_NORM_SHIFT}",
                               found=S)
    if eps_int >= MAX_EPS_INT:
        raise ModelFormatError(source, "norm epsilon too large relative to the residual scale",
                               field=name, expected="eps_int < 2^40", found=eps_int)
    return QNorm(gain=G, shift=S, eps_int=eps_int, in_scale=float(s_r), out_scale=float(s_n))


def _check_block(name, block, shape, source):
    out, n = shape
    lo, hi = weight_range(block.bits)
    n_groups = -(-n // block.group_size)
    if block.values.shape != shape or block.scales.shape != (out, n_groups):
        raise ModelFormatError(source, "block-quantized tensor has the wrong shape", field=name,
                               expected=f"values {shape}, scales {(out, n_groups)}",
                               found=f"values {block.values.shape}, scales {block.scales.shape}")
    if block.values.size and not lo <= int(block.values.min()) <= int(block.values.max()) <= hi:
        raise ModelFormatError(source, "block-quantized values outside their bit width",
                               field=name, expected=f"{lo}..{hi}",
                               found=f"{int(block.values.min())}..{int(block.values.max())}")
    if not np.isfinite(block.scales).all():
        raise ModelFormatError(source, "block scale is NaN or infinite", field=name,
                               expected="finite numbers", found="non-finite")


def _check_options(loaded, weights, group_size, context):
    if not isinstance(loaded, LoadedModel):
        raise TypeError(f"loaded must be a LoadedModel, not {loaded!r}")
    kept = sorted({b.source_type for b in loaded.block_quantized.values()})
    if weights not in (*WEIGHT_FORMATS, None, "keep", *kept):
        options = ", ".join([*WEIGHT_FORMATS, "keep", *kept])
        raise ConfigError(f"weights must be one of {options}, not {weights!r}")
    if group_size is not None and (not isinstance(group_size, int) or isinstance(group_size, bool)
                                   or group_size <= 0):
        raise ConfigError(f"group_size must be a positive integer or None, not {group_size!r}")
    if context is None:
        context = loaded.spec.max_seq_len
    if not isinstance(context, int) or isinstance(context, bool) or not 0 < context <= MAX_CONTEXT:
        raise ConfigError(f"context must be an integer in 1..{MAX_CONTEXT}, not {context!r}")
    return context


def _scales(absmax, spec, source):
    for name, value in absmax.items():
        if not math.isfinite(value):
            raise ModelFormatError(source, "float model produced NaN or infinite activations "
                                   "during calibration", field=name, expected="finite values",
                                   found=value)
    resid = [absmax["embed"]] + [absmax[f"layers.{i}.{p}"] for i in range(spec.n_layers)
                                 for p in ("resid_attn", "resid_ffn")]
    scales = {"resid": activation_scale(max(resid), 16),
              "logits": activation_scale(absmax["logits"], 16),
              "final_norm": activation_scale(absmax["final_norm"], 8)}
    for i in range(spec.n_layers):
        for p in ("attn_in", "q", "k", "v", "ffn_in", "gate", "up", "hidden"):
            name = f"layers.{i}.{p}"
            scales[name] = activation_scale(absmax[name], 8)
    return scales


def quantize(loaded, *, weights="int8", group_size=None, calibration=None, context=None):
    """Quantize ``loaded`` as ``docs/numerics.md`` specifies.

    ``weights``: "int8", "int4" or "ternary" re-quantizes every matrix from its float weights;
    ``None``/"keep" keeps every GGUF block-quantized tensor as it is (the rest becomes int8); a
    block type name (e.g. "Q4_0") keeps the tensors of that type. ``group_size``: inputs per
    scale for re-quantized tensors, ``None`` for one scale per output row. ``calibration``:
    token ids (one sequence or a list of sequences), default :func:`default_calibration`.
    ``context``: the hardware's maximum context, default ``spec.max_seq_len``.

    Raises :class:`ConfigError` for bad options and :class:`ModelFormatError` naming the tensor
    when a scale or bound falls outside the spec.
    """
    context = _check_options(loaded, weights, group_size, context)
    spec, source = loaded.spec, loaded.source
    keep = weights in (None, "keep")
    sequences, description = calibration_sequences(loaded, calibration,
                                                   min(context, spec.max_seq_len))
    scales = _scales(calibrate(loaded, sequences), spec, source)
    s_r = scales["resid"]
    kept = set()

    def weight(name):
        block = loaded.block_quantized.get(name)
        if block is not None and (keep or weights == block.source_type):
            _check_block(name, block, loaded.weights[name].shape, source)
            kept.add(block.source_type)
            return (block.values, np.asarray(block.scales, dtype=np.float64), block.bits,
                    block.group_size, block.source_type)
        fmt = weights if weights in WEIGHT_FORMATS else "int8"
        values, w_scales = quantize_weight(loaded.weights[name], fmt, group_size)
        return values, w_scales, WEIGHT_FORMATS[fmt][0], group_size, fmt

    def linear(name, s_x, s_y, out_bits, w=None):
        values, w_scales, bits, size, fmt = w if w is not None else weight(name)
        return _linear(name, values, w_scales, bits, size, fmt, s_x, s_y, out_bits, source)

    embed_weight = weight("embed")
    embed = linear("embed", 1.0, s_r, 16, embed_weight)
    layers = []
    for i in range(spec.n_layers):
        p = f"layers.{i}."
        sc = {k: scales[p + k] for k in ("attn_in", "q", "k", "v", "ffn_in", "gate", "up",
                                         "hidden")}
        M_att, s_att = _multiplier(sc["q"] * sc["k"] / math.sqrt(spec.head_dim) * math.log2(math.e)
                                   * (1 << ops.EXP_FRAC_BITS), source, p + "attention",
                                   "softmax exponent")
        M_h, s_h = _multiplier(sc["gate"] * sc["up"] / sc["hidden"], source, p + "swiglu",
                               "SwiGLU product")
        layers.append(QLayer(
            attn_norm=_norm(p + "attn_norm", loaded.weights[p + "attn_norm"], s_r, sc["attn_in"],
                            spec.norm_eps, source),
            wq=linear(p + "wq", sc["attn_in"], sc["q"], 8),
            wk=linear(p + "wk", sc["attn_in"], sc["k"], 8),
            wv=linear(p + "wv", sc["attn_in"], sc["v"], 8),
            wo=linear(p + "wo", sc["v"], s_r, 16),
            M_att=M_att, s_att=s_att,
            ffn_norm=_norm(p + "ffn_norm", loaded.weights[p + "ffn_norm"], s_r, sc["ffn_in"],
                           spec.norm_eps, source),
            w1=linear(p + "w1", sc["ffn_in"], sc["gate"], 8),
            w3=linear(p + "w3", sc["ffn_in"], sc["up"], 8),
            w2=linear(p + "w2", sc["hidden"], s_r, 16),
            silu=ops.silu_table(sc["gate"]), M_h=M_h, s_h=s_h))
    norm = _norm("norm", loaded.weights["norm"], s_r, scales["final_norm"], spec.norm_eps, source)
    head = linear("head", scales["final_norm"], scales["logits"], 16,
                  embed_weight if spec.tied_embeddings else None)
    if spec.tied_embeddings:
        # One table in silicon: the head must hold the very same arrays as the embedding.
        head = QLinear(values=embed.values, bits=head.bits, group_size=head.group_size,
                       group_mult=embed.group_mult, M=head.M, shift=head.shift,
                       out_bits=head.out_bits, source_format=head.source_format,
                       row_scale=head.row_scale, in_scale=head.in_scale,
                       out_scale=head.out_scale)
    if not kept:
        weight_format = weights if weights in WEIGHT_FORMATS else "int8"
    else:
        formats = {q.source_format for q in [embed, head] + [getattr(layer, k) for layer in layers
                                                              for k in ("wq", "wk", "wv", "wo",
                                                                        "w1", "w3", "w2")]}
        weight_format = formats.pop() if len(formats) == 1 else "mixed"
    cos, sin = ops.rope_tables(spec.head_dim, spec.rope_theta, context)
    return QuantizedModel(
        spec=spec, weight_format=weight_format, group_size=group_size, context=context,
        embed=embed, layers=tuple(layers), norm=norm, head=head, rope_cos=cos, rope_sin=sin,
        rsqrt=ops.rsqrt_table(), exp2=ops.exp2_table(), scales=scales, calibration=description,
        tokenizer=loaded.tokenizer)
