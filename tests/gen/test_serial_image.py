"""The serial engine's ROM images: every constant where the address map says, as stored."""

import zlib

import numpy as np
import pytest
from quant_helpers import random_loaded

from hardwire.gen.quantize import quantize
from hardwire.gen.serial_image import serial_image

SHAPE = dict(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=4, ffn_dim=16, vocab_size=11,
             max_seq_len=8)


def _signed16(words):
    w = np.asarray(words, dtype=np.int64)
    return np.where(w >= 1 << 15, w - (1 << 16), w)


def test_layout_holds_every_constant():
    qm = quantize(random_loaded(2, **SHAPE), weights="int4", group_size=4)
    im = serial_image(qm, context=6)
    assert im.context == 6 and im.weight_bits == 4
    consts = np.asarray(im.consts)
    for name, slot in (("embed", im.embed), ("layers.1.w2", im.layers[1]["w2"])):
        q = qm.linears()[name]
        n = q.values.size
        assert im.weights[slot.w_base:slot.w_base + n] == q.values.ravel().tolist()
        pairs = consts[slot.rows:slot.rows + 2 * q.out_features].reshape(-1, 2)
        assert pairs[:, 0].tolist() == q.M.tolist() and pairs[:, 1].tolist() == q.shift.tolist()
        g = _signed16(consts[slot.groups:slot.groups + q.group_mult.size])
        assert g.tolist() == q.group_mult.ravel().tolist() and slot.group_size == 4
    norm = im.layers[0]["ffn_norm"]
    assert _signed16(consts[norm.gains:norm.gains + 8]).tolist() == \
        qm.layers[0].ffn_norm.gain.tolist()
    assert consts[im.rsqrt:im.rsqrt + 768].tolist() == qm.rsqrt.tolist()
    assert consts[im.exp2:im.exp2 + 256].tolist() == qm.exp2.tolist()
    half = SHAPE["head_dim"] // 2
    assert _signed16(consts[im.sin:im.sin + 6 * half]).tolist() == \
        np.asarray(qm.rope_sin)[:6, :half].ravel().tolist()
    silu = im.layers[1]["silu"]
    assert _signed16(consts[silu:silu + 256]).tolist() == qm.layers[1].silu.tolist()


def test_tied_head_shares_the_embedding_weights():
    qm = quantize(random_loaded(2, **SHAPE, tied_embeddings=True), weights="int8")
    im = serial_image(qm)
    assert im.head.w_base == im.embed.w_base and im.head.rows != im.embed.rows
    untied = serial_image(quantize(random_loaded(2, **SHAPE), weights="int8"))
    assert len(untied.weights) == len(im.weights) + SHAPE["vocab_size"] * SHAPE["dim"]


@pytest.mark.parametrize(("weights", "lane"), [("int8", 8), ("int4", 4), ("ternary", 2)])
def test_packed_weights_unpack_to_the_weights(weights, lane):
    """The flash image: 16 // lane two's-complement fields a word, the first weight lowest,
    little-endian bytes, and the CRC-32 zlib computes."""
    qm = quantize(random_loaded(2, **SHAPE), weights=weights)
    im = serial_image(qm)
    assert im.weight_lane_bits == lane
    words = im.packed_weights()
    per_word = 16 // lane
    assert len(words) == -(-len(im.weights) // per_word)
    fields = [(w >> (lane * k)) & ((1 << lane) - 1) for w in words for k in range(per_word)]
    signed = [f - (1 << lane) if f >> (lane - 1) else f for f in fields]
    assert signed[:len(im.weights)] == list(im.weights)
    assert not any(signed[len(im.weights):])
    data, crc = im.weight_flash_image()
    assert data == b"".join(w.to_bytes(2, "little") for w in words)
    assert crc == zlib.crc32(data)
