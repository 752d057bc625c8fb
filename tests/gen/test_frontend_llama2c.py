"""llama2.c v0 checkpoints and tokenizer.bin: round trips, RoPE pairing, refusals."""

import struct

import numpy as np
import pytest
from model_factory import canonical_weights, tiny_hf_model, write_llama2c, write_llama2c_tokenizer

from hardwire.errors import ConfigError, HardwireError, ModelFormatError
from hardwire.gen.frontends import load_model
from hardwire.gen.frontends.llama2c import read_llama2c_tokenizer


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return tiny_hf_model(tmp_path_factory.mktemp("hf"), seed=9, n_heads=3, n_kv_heads=1)[1]


@pytest.mark.parametrize("shared", [False, True])
def test_round_trip(tmp_path, hf, shared):
    stored = write_llama2c(tmp_path / "m.bin", hf, shared=shared)
    loaded = load_model(tmp_path / "m.bin")
    spec = loaded.spec
    assert (spec.dim, spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.head_dim, spec.ffn_dim,
            spec.vocab_size, spec.max_seq_len) == (48, 2, 3, 1, 16, 80, 61, 37)
    assert spec.rope_pairing == "interleaved" and spec.tied_embeddings == shared
    assert loaded.format == "llama2c" and loaded.tokenizer is None
    assert sorted(loaded.weights) == sorted(stored)
    for name, array in stored.items():
        assert np.array_equal(loaded.weights[name], array), name


def _rope(x, pos, theta, pairing):
    """Rotate one head vector ``x`` at ``pos`` with half or interleaved pairs."""
    hd = x.shape[-1]
    angle = pos * theta ** (-np.arange(0, hd, 2) / hd)
    cos, sin = np.cos(angle), np.sin(angle)
    if pairing == "half":
        a, b = x[: hd // 2], x[hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin])
    a, b = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2], out[1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def _scores(spec, weights, x_q, x_k, pq, pk):
    hd, group = spec.head_dim, spec.n_heads // spec.n_kv_heads
    q = (weights["layers.0.wq"] @ x_q).reshape(spec.n_heads, hd)
    k = (weights["layers.0.wk"] @ x_k).reshape(spec.n_kv_heads, hd)
    return np.array([_rope(q[h], pq, spec.rope_theta, spec.rope_pairing)
                     @ _rope(k[h // group], pk, spec.rope_theta, spec.rope_pairing)
                     for h in range(spec.n_heads)])


def test_interleaved_weights_give_the_same_attention(tmp_path, hf):
    """The permuted llama2.c weights with interleaved RoPE score exactly like HF's with half."""
    spec, want = canonical_weights(hf)
    write_llama2c(tmp_path / "m.bin", hf)
    loaded = load_model(tmp_path / "m.bin")
    rng = np.random.default_rng(0)
    x_q, x_k = rng.standard_normal((2, spec.dim))
    ref = _scores(spec, want, x_q, x_k, 7, 3)
    got = _scores(loaded.spec, loaded.weights, x_q, x_k, 7, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # Without the permutation the scores differ: the test can fail.
    unpermuted = write_llama2c(tmp_path / "u.bin", hf, permute=False)
    wrong = _scores(loaded.spec, unpermuted, x_q, x_k, 7, 3)
    assert np.abs(wrong - ref).max() > 1e-2


# --- tokenizer.bin -------------------------------------------------------------------------

PIECES = ["<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", "<0xE2>", "<0x82>", "<0xAC>", " ", "t", "h",
          "e", "a", "c", " t", "th", "he", "the", " c", "ca", "cat", " cat", "!"]
SCORES = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 5, 3, 1, 2, 3, 4, 0]


def _tokenizer(tmp_path):
    path = tmp_path / "tokenizer.bin"
    write_llama2c_tokenizer(path, PIECES, SCORES)
    return read_llama2c_tokenizer(path, vocab_size=len(PIECES))


def test_bpe_merges_best_score_first(tmp_path):
    tok = _tokenizer(tmp_path)
    # " t h e": "he" (5) merges first, then "the" (3) beats " t" (2); " the" is not a piece.
    assert tok.encode("the") == [PIECES.index(" "), PIECES.index("the")]
    assert tok.encode("cat") == [PIECES.index(" cat")]
    assert tok.encode("") == []


def test_tokenizer_round_trip_and_bytes(tmp_path):
    tok = _tokenizer(tmp_path)
    for text in ["the cat", "a cat!\nthe hat€", "eh"]:
        assert tok.decode(tok.encode(text)) == text
    # "€" has no piece: its three UTF-8 bytes fall back to <0xNN> tokens, joined on decoding.
    assert tok.encode("€")[1:] == [4, 5, 6]
    # After BOS the leading space of the next piece goes, as in run.c.
    assert tok.decode([1, PIECES.index(" cat")]) == "\n<s>\ncat"
    assert tok.pieces[PIECES.index(" cat")] == " cat"
    with pytest.raises(HardwireError, match="outside the vocabulary"):
        tok.decode([len(PIECES)])
    with pytest.raises(HardwireError, match="no token"):
        tok.encode("z")


def test_tokenizer_beside_checkpoint_and_explicit(tmp_path, hf):
    pieces = PIECES + [f"x{i}" for i in range(61 - len(PIECES))]
    write_llama2c(tmp_path / "m.bin", hf)
    write_llama2c_tokenizer(tmp_path / "other.bin", pieces)
    assert load_model(tmp_path / "m.bin").tokenizer is None
    explicit = load_model(tmp_path / "m.bin", tokenizer_path=tmp_path / "other.bin")
    assert explicit.tokenizer.pieces[7:] == pieces[7:] and explicit.tokenizer.pieces[3] == "\n"
    write_llama2c_tokenizer(tmp_path / "tokenizer.bin", pieces)
    assert load_model(tmp_path / "m.bin").tokenizer.vocab_size == 61
    with pytest.raises(ConfigError, match="llama2.c"):
        load_model(tmp_path, tokenizer_path=tmp_path / "other.bin")


TOKENIZER_CASES = {
    "short": (lambda b: b[:2], "max_token_length"),
    "max-length": (lambda b: struct.pack("<i", -5) + b[4:], "max_token_length"),
    "truncated": (lambda b: b[:-3], "token 21"),
    "trailing": (lambda b: b + b"\0" * 9, "vocab_size"),
    "piece-length": (lambda b: b[:8] + struct.pack("<i", 1 << 20) + b[12:], "token 0"),
}


@pytest.mark.parametrize("case", sorted(TOKENIZER_CASES))
def test_bad_tokenizer(tmp_path, case):
    damage, field = TOKENIZER_CASES[case]
    path = tmp_path / "tokenizer.bin"
    write_llama2c_tokenizer(path, PIECES, SCORES)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelFormatError) as info:
        read_llama2c_tokenizer(path, vocab_size=len(PIECES))
    assert str(path) in str(info.value) and field in str(info.value), str(info.value)


# --- refusals ------------------------------------------------------------------------------

def _nan_weights(hf):
    spec, weights = canonical_weights(hf)
    weights["layers.1.w3"][0, 0] = np.nan

    class Source:
        pass
    source = Source()
    source.spec, source.weights = spec, weights
    return source


CASES = {
    "size-mismatch": (dict(truncate=4), "file size"),
    "negative-dim": (dict(header={"dim": -48}), "dim"),
    "huge-dims": (dict(header={"hidden_dim": 1 << 30}), "hidden_dim"),
    "heads": (dict(header={"n_heads": 5}), "n_heads"),
    "kv-heads": (dict(header={"n_kv_heads": 2}), "n_kv_heads"),
    "zero-layers": (dict(header={"n_layers": 0}), "n_layers"),
    "huge-but-consistent-claim": (dict(header={"vocab_size": (1 << 24) - 1}), "file size"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(tmp_path, hf, case):
    options, field = CASES[case]
    path = tmp_path / "m.bin"
    write_llama2c(path, hf, **options)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    assert str(path) in str(info.value) and field in str(info.value), str(info.value)


def test_other_refusals(tmp_path, hf):
    path = tmp_path / "m.bin"
    write_llama2c(path, _nan_weights(hf))
    with pytest.raises(ModelFormatError, match=r"layers\.1\.w3.*NaN/Inf") as info:
        load_model(path)
    assert str(path) in str(info.value)
    path.write_bytes(struct.pack("<I", 0x616B3432) + b"\0" * 252)
    with pytest.raises(ModelFormatError, match="magic.*version-1/2"):
        load_model(path)
    path.write_bytes(b"\0" * 10)
    with pytest.raises(ModelFormatError, match="header.*at least 28 bytes"):
        load_model(path)
    path.write_bytes(b"\x80\x02pickled")
    with pytest.raises(ModelFormatError, match="pickle"):
        load_model(path)
