"""Memory images of the serial engine (:class:`hardwire.hdl.serial.SerialDecoder`).

The serial engine keeps every constant of a :class:`QuantizedModel` in two ROMs and walks them
with one multiplier: ``weights`` (the weight integers of every matrix, row-major, one per word)
and ``consts`` (16-bit words: per-row requantization pairs, group multipliers, norm gains and the
RSQRT/EXP2/RoPE/SiLU tables, all as in ``docs/numerics.md``). This module lays them out; the
hardware reads the addresses from :class:`SerialImage`.

With the weights outside the bitstream (``weight_store="flash"``: the iCEBreaker reads them from
its SPI flash at power-up), :meth:`SerialImage.packed_weights` packs them into 16-bit words,
``16 / lane`` weights a word, the first in the low bits; :meth:`SerialImage.weight_flash_image`
is those words as bytes, little-endian, which is what the flash holds.
"""

import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .hardware import check_bounds, check_context

__all__ = ["LinearSlot", "NormSlot", "SerialImage", "serial_image"]

WORD_BITS = 16


@dataclass(frozen=True)
class LinearSlot:
    """Where one matrix lives: weights at ``w_base`` (``[n_out, n_in]`` row-major), ``(M, s)``
    word pairs at ``rows`` (``2 o``, ``2 o + 1``), group multipliers at ``groups``
    (``[n_out, n_groups]``, ``None`` per row), ``group_size`` inputs per group (``n_in`` per
    row)."""
    w_base: int
    rows: int
    groups: int | None
    n_in: int
    n_out: int
    group_size: int
    out_bits: int


@dataclass(frozen=True)
class NormSlot:
    """One RMSNorm: gains at ``gains`` (``dim`` words), its ``shift`` and ``eps_int``."""
    gains: int
    shift: int
    eps_int: int


@dataclass(frozen=True)
class SerialImage:
    """The two ROM images and the address map of one model at one context."""
    weights: list
    weight_bits: int
    consts: list
    embed: LinearSlot
    head: LinearSlot
    layers: tuple           # per layer: dict of LinearSlot (wq…w2), NormSlot (attn/ffn), scalars
    norm: NormSlot
    rsqrt: int
    exp2: int
    cos: int
    sin: int
    dim: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    context: int
    pairing: str
    eos_id: int | None

    @property
    def weight_lane_bits(self):
        """Bits each weight takes in a packed 16-bit word: ``weight_bits`` rounded up to a power
        of two (2, 4, 8 or 16)."""
        if self.weight_bits > WORD_BITS:
            raise ConfigError(f"weights of {self.weight_bits} bits do not pack into "
                              f"{WORD_BITS}-bit RAM words (at most {WORD_BITS})")
        return 1 << (self.weight_bits - 1).bit_length()

    def packed_weights(self):
        """The weights as 16-bit words, ``16 // lane`` two's-complement fields a word, weight
        ``n`` in word ``n // per_word`` at bit ``lane * (n % per_word)``; the last word padded
        with zeros."""
        lane = self.weight_lane_bits
        per_word = WORD_BITS // lane
        fields = np.asarray(self.weights, dtype=np.int64) & ((1 << lane) - 1)
        fields = np.concatenate([fields, np.zeros(-len(fields) % per_word, dtype=np.int64)])
        shifts = lane * np.arange(per_word, dtype=np.int64)
        return [int(w) for w in (fields.reshape(-1, per_word) << shifts).sum(axis=1)]

    def weight_flash_image(self):
        """``(bytes, crc32)``: the packed words little-endian, as the flash holds them, and
        their CRC-32 (ISO-HDLC, zlib's), which the board top checks after reading them."""
        data = np.asarray(self.packed_weights(), dtype="<u2").tobytes()
        return data, zlib.crc32(data)


class _Builder:
    def __init__(self):
        self.weights, self.consts = [], []
        self._shared = {}

    def words(self, values):
        base = len(self.consts)
        self.consts.extend(int(v) & 0xFFFF for v in np.asarray(values, dtype=np.int64).ravel())
        return base

    def linear(self, q):
        key = (q.values.shape, q.values.tobytes())     # a tied head reuses the embedding
        if key not in self._shared:
            self._shared[key] = len(self.weights)
            self.weights.extend(int(v) for v in q.values.astype(np.int64).ravel())
        rows = self.words(np.stack([q.M, q.shift], axis=1))
        groups = None if q.group_mult is None else self.words(q.group_mult)
        return LinearSlot(w_base=self._shared[key], rows=rows, groups=groups,
                          n_in=q.in_features, n_out=q.out_features,
                          group_size=q.group_size if q.group_mult is not None else q.in_features,
                          out_bits=q.out_bits)

    def norm(self, q):
        return NormSlot(gains=self.words(q.gain), shift=int(q.shift), eps_int=int(q.eps_int))


def serial_image(qm, context=None):
    """The :class:`SerialImage` of ``qm`` with a KV cache of ``context`` positions (the model's
    own by default). Raises :class:`ConfigError` as :func:`decoder_params` does."""
    spec = qm.spec
    context = check_context(spec, context, quantized_context=qm.context)
    check_bounds(qm, context)
    b = _Builder()
    embed = b.linear(qm.embed)
    layers = []
    for layer in qm.layers:
        slots = {k: b.linear(getattr(layer, k)) for k in ("wq", "wk", "wv", "wo", "w1", "w3",
                                                          "w2")}
        slots.update(attn_norm=b.norm(layer.attn_norm), ffn_norm=b.norm(layer.ffn_norm),
                     silu=b.words(layer.silu), M_att=int(layer.M_att), s_att=int(layer.s_att),
                     M_h=int(layer.M_h), s_h=int(layer.s_h))
        layers.append(slots)
    norm = b.norm(qm.norm)
    head = b.linear(qm.head)
    half = spec.head_dim // 2
    rsqrt = b.words(qm.rsqrt)
    exp2 = b.words(qm.exp2)
    cos = b.words(np.asarray(qm.rope_cos)[:context, :half])
    sin = b.words(np.asarray(qm.rope_sin)[:context, :half])
    bits = max(q.bits for q in qm.linears().values())
    return SerialImage(weights=b.weights, weight_bits=max(bits, 2), consts=b.consts, embed=embed,
                       head=head, layers=tuple(layers), norm=norm, rsqrt=rsqrt, exp2=exp2,
                       cos=cos, sin=sin, dim=spec.dim, ffn_dim=spec.ffn_dim,
                       n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads,
                       head_dim=spec.head_dim, vocab=spec.vocab_size, context=context,
                       pairing=spec.rope_pairing, eos_id=spec.eos_id)

