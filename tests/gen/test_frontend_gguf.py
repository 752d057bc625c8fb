"""GGUF files: float and block-quantized round trips, q/k un-permutation, and refusals."""

import gguf
import numpy as np
import pytest
from model_factory import canonical_weights, export_permute, tiny_hf_model, write_gguf

from hardwire.errors import ModelFormatError
from hardwire.gen.frontends import load_model
from hardwire.gen.frontends.gguf_reader import gguf_tensor_name, unpermute_rows

T = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Odd shapes, nothing a multiple of 32: every matrix stays F32."""
    return tiny_hf_model(tmp_path_factory.mktemp("small"), seed=5, rope_theta=777.0)[1]


@pytest.fixture(scope="module")
def blocky(tmp_path_factory):
    """Inputs a multiple of 32: every matrix takes Q8_0/Q4_0/Q5_0."""
    return tiny_hf_model(tmp_path_factory.mktemp("blocky"), dim=64, n_heads=4, n_kv_heads=2,
                         ffn_dim=96, seed=6)[1]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Inputs of 256: ternary and K-quant blocks fit."""
    return tiny_hf_model(tmp_path_factory.mktemp("wide"), dim=256, n_heads=4, n_kv_heads=2,
                         ffn_dim=256, n_layers=1, seed=8)[1]


def test_unpermute_inverts_export_permutation():
    w = np.arange(24 * 5).reshape(24, 5)
    for nh in (1, 2, 3, 6):
        permuted = export_permute(w, nh)
        assert not np.array_equal(permuted, w)
        assert np.array_equal(permuted[unpermute_rows(24, nh)], w)
        explicit = permuted.reshape(nh, 24 // nh // 2, 2, 5).swapaxes(1, 2).reshape(24, 5)
        assert np.array_equal(explicit, w)


def test_f32_round_trip_undoes_permutation(tmp_path, small):
    spec, want = canonical_weights(small)
    stored = write_gguf(tmp_path / "m.gguf", small, qtype="F32")
    # The file really holds permuted rows, so equality below proves the un-permutation.
    assert not np.array_equal(stored["blk.0.attn_q.weight"][1], want["layers.0.wq"])
    assert not np.array_equal(stored["blk.1.attn_k.weight"][1], want["layers.1.wk"])
    loaded = load_model(tmp_path / "m.gguf")
    got = loaded.spec
    assert (got.dim, got.n_layers, got.n_heads, got.n_kv_heads, got.head_dim, got.ffn_dim,
            got.vocab_size, got.max_seq_len) == (48, 2, 3, 1, 16, 80, 61, 37)
    assert got.rope_theta == 777.0 and got.rope_pairing == "half" and not got.tied_embeddings
    assert got.norm_eps == pytest.approx(1e-5) and (got.bos_id, got.eos_id) == (1, 2)
    assert loaded.format == "gguf" and loaded.block_quantized == {}
    for name, array in want.items():
        assert np.array_equal(loaded.weights[name], array), name


@pytest.mark.parametrize("qtype", ["F16", "BF16"])
def test_half_float_types(tmp_path, small, qtype):
    stored = write_gguf(tmp_path / "m.gguf", small, qtype=qtype)
    loaded = load_model(tmp_path / "m.gguf")
    spec, want = canonical_weights(small)
    for name in want:
        t, data = stored[gguf_tensor_name(name)]
        expect = gguf.quants.dequantize(data, t).reshape(want[name].shape)
        if name.endswith(("wq", "wk")):
            nh = spec.n_heads if name.endswith("wq") else spec.n_kv_heads
            expect = expect[unpermute_rows(expect.shape[0], nh)]
        assert np.array_equal(loaded.weights[name], expect), name
    assert stored["blk.0.ffn_up.weight"][0] == T[qtype]


def test_tied_output(tmp_path, small):
    write_gguf(tmp_path / "m.gguf", small, drop=("output.weight",))
    loaded = load_model(tmp_path / "m.gguf")
    assert loaded.spec.tied_embeddings and "head" not in loaded.weights


# Independent unpacking of the block layouts (ggml-common.h), to check the reader's integers.
def _unpack(qtype, data, rows, cols):
    b = data.reshape(-1, gguf.GGML_QUANT_SIZES[T[qtype]][1])
    if qtype == "Q8_0":
        d, q = b[:, :2], b[:, 2:].view(np.int8).astype(int)
    elif qtype == "Q4_0":
        d, qs = b[:, :2], b[:, 2:].astype(int)
        q = np.concatenate([qs & 15, qs >> 4], axis=1) - 8
    elif qtype == "Q5_0":
        d, qs = b[:, :2], b[:, 6:].astype(int)
        qh = b[:, 2:6].copy().view("<u4").astype(np.int64)
        high = (qh >> np.arange(32)) & 1
        q = np.concatenate([qs & 15, qs >> 4], axis=1) + 16 * high - 16
    elif qtype == "TQ2_0":
        d, qs = b[:, 64:], b[:, :64].astype(int).reshape(-1, 2, 1, 32)
        q = ((qs >> np.array([0, 2, 4, 6]).reshape(1, 1, 4, 1)) & 3).reshape(-1, 256) - 1
    scales = d.copy().view("<f2").astype(np.float32)
    return q.reshape(rows, cols), scales.reshape(rows, -1)


BLOCK_TYPES = {"Q8_0": (8, 32, "blocky"), "Q4_0": (4, 32, "blocky"), "Q5_0": (5, 32, "blocky"),
               "TQ2_0": (2, 256, "wide"), "TQ1_0": (2, 256, "wide")}


@pytest.mark.parametrize("qtype", sorted(BLOCK_TYPES))
def test_block_types_kept(tmp_path, request, qtype):
    bits, group, fixture = BLOCK_TYPES[qtype]
    torch_model = request.getfixturevalue(fixture)
    spec, want = canonical_weights(torch_model)
    stored = write_gguf(tmp_path / "m.gguf", torch_model, qtype=qtype)
    loaded = load_model(tmp_path / "m.gguf")
    matrices = [n for n in want if want[n].ndim == 2]
    assert sorted(loaded.block_quantized) == sorted(matrices)
    for name in matrices:
        t, data = stored[gguf_tensor_name(name)]
        assert t == T[qtype]
        kept = loaded.block_quantized[name]
        rows, cols = want[name].shape
        assert (kept.bits, kept.group_size, kept.source_type) == (bits, group, qtype)
        assert kept.values.dtype == np.int8 and kept.values.shape == (rows, cols)
        assert kept.scales.dtype == np.float32 and kept.scales.shape == (rows, cols // group)
        order = np.arange(rows)
        if name.endswith(("wq", "wk")):
            order = unpermute_rows(rows, spec.n_heads if name.endswith("wq") else spec.n_kv_heads)
        dequantized = gguf.quants.dequantize(data, t).reshape(rows, cols)[order]
        assert np.array_equal(loaded.weights[name], dequantized), name
        assert np.array_equal(kept.dequantize(), dequantized), name
        if qtype != "TQ1_0":
            values, scales = _unpack(qtype, data, rows, cols)
            assert np.array_equal(kept.values, values[order]), name
            assert np.array_equal(kept.scales, scales[order]), name
        lo, hi = (-1, 1) if qtype.startswith("TQ") else (-(1 << bits - 1), (1 << bits - 1) - 1)
        assert lo <= kept.values.min() and kept.values.max() <= hi
        # Close to the original (HF) weights only in the right row order.
        err = np.abs(loaded.weights[name] - want[name]).max()
        assert err <= (0.7 if qtype.startswith("TQ") else 0.2) * np.abs(want[name]).max()
    wq = want["layers.0.wq"]
    assert np.abs(loaded.weights["layers.0.wq"] - export_permute(wq, spec.n_heads)).max() \
        > 2 * np.abs(loaded.weights["layers.0.wq"] - wq).max()


def _random_blocks(qtype, rows, cols, rng, scale_at):
    block, size = gguf.GGML_QUANT_SIZES[T[qtype]]
    data = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    for at in scale_at:
        data[:, :, at:at + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    return data.reshape(rows, -1)


@pytest.mark.parametrize("qtype", ["Q4_1", "Q5_1", "Q4_K", "Q6_K", "Q2_K"])
def test_float_only_types(tmp_path, wide, qtype):
    """Types with offsets or nested scales are dequantized (by gguf) and not kept as blocks."""
    rng = np.random.default_rng(0)
    spec, _ = canonical_weights(wide)
    # Q4_1/Q5_1 hold d and m first; Q4_K d/dmin first; Q6_K its d last; Q2_K d/dmin last.
    at = {"Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q6_K": (208,), "Q2_K": (80, 82)}
    raw = {name: (qtype, _random_blocks(qtype, spec.ffn_dim if "gate" in name else spec.q_dim,
                                        spec.dim, rng, at[qtype]))
           for name in ("blk.0.ffn_gate.weight", "blk.0.attn_q.weight")}
    write_gguf(tmp_path / "m.gguf", wide, qtype="F32", raw=raw)
    loaded = load_model(tmp_path / "m.gguf")
    assert loaded.block_quantized == {}
    gate = gguf.quants.dequantize(raw["blk.0.ffn_gate.weight"][1], T[qtype])
    assert np.array_equal(loaded.weights["layers.0.w1"], gate)
    q = gguf.quants.dequantize(raw["blk.0.attn_q.weight"][1], T[qtype])
    assert np.array_equal(loaded.weights["layers.0.wq"], q[unpermute_rows(256, 4)])


def test_tokenizer_from_gguf(tmp_path, small):
    write_gguf(tmp_path / "m.gguf", small)
    tok = load_model(tmp_path / "m.gguf").tokenizer
    assert tok.vocab_size == 61 and tok.pieces[6] == " the" and tok.pieces[1] == ""
    for text in ["the heathen and a tree", "he! then\nthe end.", "a"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert max(ids) < 61
    # Greedy longest match: " the" is one token, "!" and "\n" go through byte tokens.
    assert tok.encode("the") == [tok.pieces.index(" the")]
    assert tok.encode("!") == [tok.pieces.index(" "), 4]


# --- refusals ------------------------------------------------------------------------------

def _patch(offset_of, value, size):
    def damage(path):
        blob = bytearray(path.read_bytes())
        at = offset_of(bytes(blob))
        blob[at:at + size] = value.to_bytes(size, "little")
        path.write_bytes(bytes(blob))
    return damage


def _type_offset(name):
    # tensor info: u64 name length, name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset
    return lambda blob: blob.find(name.encode()) + len(name) + 4 + 8 * 1


def _cut(fraction):
    def damage(path):
        blob = path.read_bytes()
        path.write_bytes(blob[:int(len(blob) * fraction) if fraction < 1 else fraction])
    return damage


def _nan_raw():
    w = np.ones((80, 48), np.float32)
    w[3, 4] = np.inf
    return {"blk.0.ffn_up.weight": ("F32", w)}


def _bad_tq2(rows):
    data = np.full((rows, 66), 0xFF, np.uint8)   # every 2-bit code is 3, i.e. the value +2
    data[:, 64:66] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    return data


CASES = {
    "magic": (dict(), lambda p: p.write_bytes(b"GGML" + p.read_bytes()[4:]), "magic"),
    "counts": (dict(), _patch(lambda b: 8, 1 << 40, 8), "tensor_count"),
    "truncated-metadata": (dict(), _cut(1000), "structure"),
    "truncated-data": (dict(), _cut(0.9), ".weight"),
    "unknown-type": (dict(), _patch(_type_offset("output_norm.weight"), 99, 4),
                     "output_norm.weight"),
    "architecture": (dict(metadata={"general.architecture": "gpt2"}), None,
                     "general.architecture"),
    "missing-key": (dict(metadata={"llama.block_count": None}), None, "llama.block_count"),
    "absurd-dim": (dict(metadata={"llama.embedding_length": ("uint64", 1 << 40)}), None,
                   "llama.embedding_length"),
    "rope-scaling": (dict(metadata={"llama.rope.scaling.type": "linear"}), None,
                     "llama.rope.scaling.type"),
    "bos-range": (dict(metadata={"tokenizer.ggml.bos_token_id": 500}), None,
                  "tokenizer.ggml.bos_token_id"),
    "kv-heads": (dict(metadata={"llama.attention.head_count_kv": 2}), None,
                 "llama.attention.head_count_kv"),
    "missing-tensor": (dict(drop=("blk.1.ffn_up.weight",)), None, "blk.1.ffn_up.weight"),
    "wrong-shape": (dict(metadata={"llama.feed_forward_length": 81}), None,
                    "blk.0.ffn_gate.weight"),
    "extra-tensor": (dict(extra_tensors={"blk.0.attn_q.bias": np.zeros(48)}), None,
                     "blk.0.attn_q.bias"),
    "non-finite": (dict(raw=_nan_raw()), None, "blk.0.ffn_up.weight"),
    "unsupported-type": (dict(raw={"blk.0.ffn_up.weight": ("I8", np.ones((80, 48), np.int8))}),
                         None, "blk.0.ffn_up.weight"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(tmp_path, small, case):
    options, damage, field = CASES[case]
    path = tmp_path / "m.gguf"
    write_gguf(path, small, **options)
    if damage is not None:
        damage(path)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and field in message, message


def test_ternary_code_out_of_range(tmp_path, wide):
    path = tmp_path / "m.gguf"
    write_gguf(path, wide, qtype="F32", raw={"blk.0.ffn_up.weight": ("TQ2_0", _bad_tq2(256))})
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    assert "blk.0.ffn_up.weight" in str(info.value) and "-1..1" in str(info.value)
