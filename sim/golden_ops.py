"""The integer operations of ``docs/numerics.md``, one function each: the oracle for every unit.

Every function takes plain integer arrays (any integer dtype) and the constants the quantizer
stored, computes in ``int64`` (the spec proves every intermediate fits) and returns ``int64``. Table
builders and :func:`multiplier` are used by the quantizer only; at run time the tables come from
``QuantizedModel``.
"""

import math

import numpy as np

__all__ = [
    "saturate", "rshift_round", "requant", "round_half_up", "multiplier",
    "rsqrt_table", "exp2_table", "silu_table", "rope_tables",
    "linear", "embed", "rmsnorm", "rmsnorm_factor", "rope", "attention", "swiglu",
    "residual_add", "argmax",
    "MULT_BITS", "RSQRT_BITS", "RSQRT_BASE", "EXP_FRAC_BITS", "ROPE_FRAC_BITS",
    "RECIP_SHIFT", "GROUP_MULT_BITS",
]

MULT_BITS = 15          # M in [2^14, 2^15)
GROUP_MULT_BITS = 14    # group multipliers are signed, |g| <= 2^14
RSQRT_BITS = 20         # RSQRT entries are round(2^20 / sqrt(m + 0.5))
RSQRT_BASE = 256        # m in [256, 1024)
EXP_FRAC_BITS = 8       # softmax exponent D has 8 fraction bits (log2 units)
EXP_ONE = 1 << 15       # EXP2[0]: the weight of the maximum score
ROPE_FRAC_BITS = 14     # cos/sin tables in Q1.14
RECIP_SHIFT = 40        # r = floor(2^40 / P)


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def saturate(x, bits):
    """``sat_b``: clamp to the signed ``bits``-bit range."""
    # minimum/maximum rather than np.clip: same result, a fraction of the call overhead.
    return np.minimum(np.maximum(_i64(x), -(1 << (bits - 1))), (1 << (bits - 1)) - 1)


def rshift_round(x, s):
    """``(x + 2^(s-1)) >> s``: round to nearest, ties toward +infinity; ``x`` where ``s == 0``."""
    x, s = _i64(x), _i64(s)
    half = np.right_shift(np.left_shift(np.int64(1), s), 1)      # 2^(s-1), or 0 for s = 0
    return np.right_shift(x + half, s)


def requant(acc, M, s, bits):
    """``sat_b(rshift_round(acc * M, s))``."""
    return saturate(rshift_round(_i64(acc) * _i64(M), s), bits)


def round_half_up(r):
    """``floor(r + 0.5)`` in float64, as an int64 array (quantizer only)."""
    return np.floor(np.asarray(r, dtype=np.float64) + 0.5).astype(np.int64)


def multiplier(r):
    """Fixed-point ``(M, s)`` with ``r ≈ M * 2^-s``, ``M`` in ``[2^14, 2^15)``; ``(0, 1)`` for 0.

    Raises ``ValueError`` when ``r`` is negative, not finite, or needs ``s`` outside ``1..62``.
    """
    r = float(r)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"scale ratio must be a finite non-negative number, not {r!r}")
    if r == 0:
        return 0, 1
    _, k = math.frexp(r)          # r = f * 2^k with f in [0.5, 1): floor(log2 r) = k - 1
    e = k - 1
    M = math.floor(math.ldexp(r, MULT_BITS - 1 - e) + 0.5)
    s = MULT_BITS - 1 - e
    if M == 1 << MULT_BITS:
        M, s = 1 << (MULT_BITS - 1), s - 1
    if not 1 <= s <= 62:
        raise ValueError(f"scale ratio {r!r} needs a shift of {s}, outside 1..62")
    return M, s


def rsqrt_table():
    """``RSQRT[j] = round_half_up(2^20 / sqrt(256 + j + 0.5))`` for ``j = 0..767``."""
    j = np.arange(3 * RSQRT_BASE, dtype=np.float64)
    return round_half_up(2.0 ** RSQRT_BITS / np.sqrt(RSQRT_BASE + j + 0.5))


def exp2_table():
    """``EXP2[f] = round_half_up(2^15 * 2^(-f/256))`` for ``f = 0..255``."""
    f = np.arange(1 << EXP_FRAC_BITS, dtype=np.float64)
    return round_half_up(EXP_ONE * np.exp2(-f / (1 << EXP_FRAC_BITS)))


def silu_table(scale):
    """``SILU[i] = sat_8(round_half_up(silu((i - 128) * scale) / scale))`` for ``i = 0..255``."""
    z = (np.arange(256, dtype=np.float64) - 128) * float(scale)
    return saturate(round_half_up(z / (1.0 + np.exp(-z)) / float(scale)), 8)


def rope_tables(head_dim, theta, context):
    """Q1.14 ``(C, S)`` tables, each ``[context, head_dim // 2]``."""
    j = np.arange(head_dim // 2, dtype=np.float64)
    inv_freq = float(theta) ** (-2.0 * j / head_dim)
    angle = np.arange(context, dtype=np.float64)[:, None] * inv_freq[None, :]
    one = 1 << ROPE_FRAC_BITS
    return round_half_up(np.cos(angle) * one), round_half_up(np.sin(angle) * one)


def _grouped_acc(x, w, group_mult, group_size):
    """``acc[o] = sum_j g[o,j] * acc_j[o]``; the last group may be shorter than ``group_size``."""
    x, w = _i64(x), _i64(w)
    if group_mult is None:
        return w @ x
    out, n = w.shape
    n_groups = -(-n // group_size)
    pad = n_groups * group_size - n
    xp = np.pad(x, (0, pad)).reshape(n_groups, group_size)
    wp = np.pad(w, ((0, 0), (0, pad))).reshape(out, n_groups, group_size)
    acc_groups = np.einsum("ogk,gk->og", wp, xp)
    return (acc_groups * _i64(group_mult)).sum(axis=1)


def linear(x, w, M, s, out_bits, *, group_mult=None, group_size=None):
    """Matrix–vector product with per-row requantization (``docs/numerics.md``, Linear layer).

    ``x``: int8 ``[n]``; ``w``: ``[out, n]``; ``M``, ``s``: ``[out]``; ``group_mult``:
    ``[out, ceil(n / group_size)]`` or ``None`` for per-row scales. Returns ``[out]``.
    """
    return requant(_grouped_acc(x, w, group_mult, group_size), M, s, out_bits)


def embed(token, w, M, s, *, group_mult=None, group_size=None):
    """Embedding row ``token`` scaled into the int16 residual stream."""
    row = _i64(w[token])
    if group_mult is not None:
        row = row * np.repeat(_i64(group_mult[token]), group_size)[: row.shape[0]]
    return requant(row, M[token], s[token], 16)


def rmsnorm_factor(u, table):
    """``(R, e)`` with ``1/sqrt(u) ≈ R 2^-20 2^(-e/2)`` for an integer ``u >= 1``."""
    u = int(u)
    if u < 1:
        raise ValueError(f"u must be >= 1, not {u}")
    e = u.bit_length() - 10
    e += e & 1
    m = u >> e if e >= 0 else u << -e
    return int(table[m - RSQRT_BASE]), e


def rmsnorm(x, gain, shift, eps_int, table):
    """RMSNorm of int16 ``x`` with int16 per-element ``gain`` and common ``shift`` → int8."""
    x = _i64(x)
    u = int((x * x).sum()) + int(eps_int)
    R, e = rmsnorm_factor(u, table)
    return saturate(rshift_round(x * R * _i64(gain), RSQRT_BITS + e // 2 + int(shift)), 8)


def _pair_index(head_dim, pairing):
    half = head_dim // 2
    if pairing == "half":
        return np.arange(half), np.arange(half) + half
    if pairing == "interleaved":
        return np.arange(half) * 2, np.arange(half) * 2 + 1
    raise ValueError(f"pairing must be 'half' or 'interleaved', not {pairing!r}")


def rope(v, pos, cos, sin, n_heads, pairing):
    """Rotate int8 ``v`` (``n_heads`` heads, concatenated) to position ``pos``; int8 out."""
    v = _i64(v).reshape(n_heads, -1)
    ia, ib = _pair_index(v.shape[1], pairing)
    c, s = _i64(cos[pos]), _i64(sin[pos])
    a, b = v[:, ia], v[:, ib]
    out = np.empty_like(v)
    out[:, ia] = saturate(rshift_round(a * c - b * s, ROPE_FRAC_BITS), 8)
    out[:, ib] = saturate(rshift_round(a * s + b * c, ROPE_FRAC_BITS), 8)
    return out.reshape(-1)


def attention(q, k_cache, v_cache, n_heads, n_kv_heads, M_att, s_att, table):
    """Causal attention of one position over cached positions ``0..p`` (rows of the caches).

    ``q``: int8 ``[n_heads * hd]``; ``k_cache``, ``v_cache``: int8 ``[p + 1, n_kv_heads * hd]``.
    Returns int8 ``[n_heads * hd]`` at the scale of ``v``.
    """
    q = _i64(q).reshape(n_heads, -1)
    positions = k_cache.shape[0]
    k = _i64(k_cache).reshape(positions, n_kv_heads, -1)
    v = _i64(v_cache).reshape(positions, n_kv_heads, -1)
    group = n_heads // n_kv_heads
    out = np.empty_like(q)
    table = _i64(table)
    for h in range(n_heads):
        g = h // group
        score = k[:, g, :] @ q[h]
        D = -rshift_round((score - score.max()) * int(M_att), int(s_att))
        pr = table[D & ((1 << EXP_FRAC_BITS) - 1)] >> np.minimum(D >> EXP_FRAC_BITS, 16)
        P = int(pr.sum())
        r = (1 << RECIP_SHIFT) // P
        acc = pr @ v[:, g, :]
        out[h] = saturate(rshift_round(acc * r, RECIP_SHIFT), 8)
    return out.reshape(-1)


def swiglu(gate, up, table, M, s):
    """``requant(SILU[gate + 128] * up, M, s, 8)``."""
    a = _i64(table)[_i64(gate) + 128]
    return requant(a * _i64(up), M, s, 8)


def residual_add(x, y):
    """``sat_16(x + y)``."""
    return saturate(_i64(x) + _i64(y), 16)


def argmax(logits):
    """Index of the largest logit; the lowest index wins ties."""
    return int(np.argmax(_i64(logits)))
