import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from quant_helpers import CharTokenizer, block_q8_0, random_loaded

from hardwire.errors import ConfigError, ModelFormatError
from hardwire.gen import calibrate as calibrate_mod
from hardwire.gen.model import BlockQuantized
from hardwire.gen.native import native_bytes
from hardwire.gen.quantize import (
    MAX_INPUTS,
    _linear,
    _norm,
    group_multipliers,
    norm_constants,
    quantize,
    quantize_weight,
)
from hardwire.sim import golden_ops as ops
from hardwire.sim.golden import GoldenModel

# --- fixed-point multipliers -------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=2.0 ** -48, max_value=2.0 ** 14 - 1,   # just below 2^14 rounds to s=0
                 allow_subnormal=False))
def test_multiplier_precision_and_range(r):
    M, s = ops.multiplier(r)
    assert 1 << 14 <= M < 1 << 15
    assert 1 <= s <= 62
    assert abs(M * 2.0 ** -s - r) <= r * 2.0 ** -15


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.floats(2.0 ** -20, 2.0 ** 6))
def test_requant_is_rounded_product(acc, r):
    M, s = ops.multiplier(r)
    y = int(ops.requant(np.array([acc]), M, s, 62)[0])
    assert y == math.floor((acc * M + (1 << (s - 1))) / (1 << s))   # exact rational arithmetic
    assert abs(y - acc * r) <= 0.5 + abs(acc * r) * 2.0 ** -15 + 1e-9


def test_multiplier_edges():
    assert ops.multiplier(0.0) == (0, 1)
    assert ops.multiplier(1.0) == (1 << 14, 14)
    assert ops.multiplier(1.0 - 2.0 ** -17) == (1 << 14, 14)   # rounds up to 2^15: renormalized
    for bad in (2.0 ** 14, 2.0 ** -49, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            ops.multiplier(bad)


# --- weight quantization -----------------------------------------------------------------------

def _reconstruct(values, scales, group_size):
    n = values.shape[1]
    size = n if group_size is None else group_size
    return values * np.repeat(scales, size, axis=1)[:, :n]


@pytest.mark.parametrize("fmt,q", [("int8", 127), ("int4", 7), ("ternary", 1)])
@pytest.mark.parametrize("group_size", [None, 8, 7])
def test_quantize_weight_formats(fmt, q, group_size):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((9, 20)).astype(np.float32)
    w[2] = 0                                                   # a zero row: scale 0, zeros
    values, scales = quantize_weight(w, fmt, group_size)
    n_groups = 1 if group_size is None else -(-20 // group_size)
    assert values.dtype == np.int8 and values.shape == w.shape
    assert scales.shape == (9, n_groups)
    assert values.min() >= -q and values.max() <= q
    assert (values[2] == 0).all() and (scales[2] == 0).all()
    size = 20 if group_size is None else group_size
    for j in range(n_groups):
        block = np.abs(w[:, j * size:(j + 1) * size].astype(np.float64))
        expected = block.mean(axis=1) if fmt == "ternary" else block.max(axis=1) / q
        np.testing.assert_allclose(scales[:, j], expected, rtol=1e-12)
    error = np.abs(_reconstruct(values, scales, group_size) - w)
    per_input = np.repeat(scales, size, axis=1)[:, :20]
    if fmt == "ternary":
        # absmean: values beyond 1.5 scale clip; the rest round to within half a step
        inside = np.abs(w) <= 1.5 * per_input
        assert (error[inside] <= 0.5 * per_input[inside] + 1e-6).all()
        assert set(np.unique(values)) <= {-1, 0, 1}
    else:
        assert (error <= 0.5 * per_input + 1e-6).all()
        # absmax maps the largest magnitude of each group exactly to +-q
        assert (np.abs(values).max(axis=1)[np.abs(w).max(axis=1) > 0] == q).all()


def test_group_multipliers_relative_to_row_max():
    scales = np.array([[0.5, 1.0, 0.25], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.5]])
    g, smax = group_multipliers(scales)
    np.testing.assert_array_equal(smax, [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [[8192, 16384, 4096], [0, 0, 0], [-16384, 8192, 4096]])


def test_norm_constants_largest_shift():
    rng = np.random.default_rng(5)
    gamma = 1 + 0.3 * rng.standard_normal(24)
    G, S, eps_int = norm_constants(gamma, s_r=1e-3, s_n=0.02, eps=1e-5)
    assert np.abs(G).max() < 1 << 15
    assert np.abs(ops.round_half_up(gamma * math.sqrt(24) / 0.02 * 2.0 ** (S + 1))).max() \
        >= 1 << 15
    assert eps_int == max(1, int(ops.round_half_up(1e-5 * 24 / 1e-6)))
    G, S, _ = norm_constants(np.zeros(8), s_r=1e-3, s_n=0.02, eps=1e-5)
    assert S == 22 and not G.any()


# --- the whole quantizer -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded():
    return random_loaded(0)


@pytest.mark.parametrize("weights,group_size", [("int8", None), ("int4", 8), ("ternary", None)])
def test_quantize_structure(loaded, weights, group_size):
    qm = quantize(loaded, weights=weights, group_size=group_size)
    spec = loaded.spec
    assert qm.weight_format == weights and qm.context == spec.max_seq_len
    assert qm.rope_cos.shape == (spec.max_seq_len, spec.head_dim // 2)
    for name, q in qm.linears().items():
        lo = {"int8": -127, "int4": -7, "ternary": -1}[weights]
        assert q.values.min() >= lo and q.values.max() <= -lo, name
        assert ((q.M == 0) | ((q.M >= 1 << 14) & (q.M < 1 << 15))).all()
        assert ((q.shift >= 1) & (q.shift <= 62)).all()
        assert q.out_bits == (16 if name in ("embed", "head") or name[-2:] in ("wo", "w2") else 8)
        if group_size is None:
            assert q.group_mult is None
        else:
            assert q.group_mult.shape == (q.out_features, -(-q.in_features // group_size))
            assert (np.abs(q.group_mult).max(axis=1) == 1 << 14).all()
        # M 2^-s reproduces the real factor s_x * smax / s_y
        factor = q.in_scale * q.row_scale / q.out_scale / (1 if q.group_mult is None else 2**14)
        np.testing.assert_allclose(q.M * 2.0 ** -q.shift, factor, rtol=2 ** -14)
    assert qm.s_r == qm.scales["resid"] and qm.s_logit == qm.head.out_scale
    bits = qm.rom_bits()
    assert bits["layers.0.wq"] == qm.layers[0].wq.rom_bits() > qm.layers[0].wq.values.size
    assert {"embed", "head", "norm", "tables"} <= set(bits)


def test_quantize_is_deterministic(loaded):
    a = quantize(loaded, weights="int4", group_size=8)
    b = quantize(random_loaded(0), weights="int4", group_size=8)
    assert native_bytes(a) == native_bytes(b)


def test_tied_head_shares_embedding():
    qm = quantize(random_loaded(1, tied_embeddings=True), weights="int8", group_size=8)
    assert qm.head.values is qm.embed.values and qm.head.group_mult is qm.embed.group_mult
    assert not np.array_equal(qm.head.M * 2.0 ** -qm.head.shift,
                              qm.embed.M * 2.0 ** -qm.embed.shift)
    assert qm.rom_bits()["head"] == qm.head.out_features * 21


def test_kept_blocks_identical_with_signed_scales():
    base = random_loaded(2, dim=64, head_dim=8, n_heads=8, n_kv_heads=2, ffn_dim=64)
    blocks = {"layers.0.wq": block_q8_0(base.weights["layers.0.wq"], signed_scales=True),
              "layers.1.w2": block_q8_0(base.weights["layers.1.w2"])}
    weights = dict(base.weights)
    for name, b in blocks.items():
        weights[name] = b.dequantize()
    loaded = type(base)(spec=base.spec, weights=weights, tokenizer=None, source="kept.gguf",
                        format="gguf", block_quantized=blocks)
    qm = quantize(loaded, weights="keep")
    assert qm.weight_format == "mixed"
    for name, b in blocks.items():
        q = qm.linears()[name]
        np.testing.assert_array_equal(q.values, b.values)
        assert q.source_format == "Q8_0" and q.group_size == 32 and q.bits == 8
        g, smax = group_multipliers(b.scales.astype(np.float64))
        np.testing.assert_array_equal(q.group_mult, g)
        assert (q.group_mult < 0).any() == (name == "layers.0.wq")
    assert qm.linears()["layers.0.wk"].source_format == "int8"
    # re-quantizing instead: the kept integers are not reused
    assert quantize(loaded, weights="int4").linears()["layers.0.wq"].values.max() <= 7
    assert quantize(loaded, weights="Q8_0").linears()["layers.1.w2"].source_format == "Q8_0"
    # signed group multipliers still give the float model's answers
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    from hardwire.sim.reference import FloatModel
    floats = FloatModel(loaded).logits_for(ids)
    ints = GoldenModel(qm).logits_for(ids) * qm.s_logit
    assert np.corrcoef(floats.ravel(), ints.ravel())[0, 1] > 0.99


def test_bad_options(loaded):
    with pytest.raises(ConfigError, match="weights must be one of int8, int4, ternary, keep"):
        quantize(loaded, weights="int3")
    with pytest.raises(ConfigError, match="group_size must be a positive integer"):
        quantize(loaded, group_size=0)
    with pytest.raises(ConfigError, match="context must be an integer"):
        quantize(loaded, context=0)
    with pytest.raises(ConfigError, match="token id 99 is outside the vocabulary"):
        quantize(loaded, calibration=[1, 2, 99])


def test_refusals_name_the_tensor(loaded):
    wide = np.zeros((1, MAX_INPUTS + 1), dtype=np.int8)
    with pytest.raises(ModelFormatError, match="layers.3.w2.*accumulator bound"):
        _linear("layers.3.w2", wide, np.ones((1, 1)), 8, None, "int8", 1.0, 1.0, 16, "m")
    with pytest.raises(ModelFormatError, match=r"big: row 0: requantization factor out of range"):
        _linear("big", np.ones((1, 4), np.int8), np.ones((1, 1)), 8, None, "int8", 1e6, 1e-3, 8,
                "m")
    with pytest.raises(ModelFormatError, match="m: layers.1.attn_norm: norm gain too large"):
        _norm("layers.1.attn_norm", np.ones(8), 1e-3, 1e-12, 1e-5, "m")
    with pytest.raises(ModelFormatError, match="m: norm: norm epsilon too large"):
        _norm("norm", np.ones(8), 1e-12, 0.1, 1e-5, "m")
    weights = dict(loaded.weights)
    weights["layers.1.wq"] = weights["layers.1.wq"] * np.float32(1e30)
    broken = type(loaded)(spec=loaded.spec, weights=weights, tokenizer=None, source="big.gguf",
                          format="float")
    with pytest.raises(ModelFormatError, match="big.gguf: layers.1.attention: softmax exponent"):
        quantize(broken)


def test_calibration_sources(loaded, monkeypatch, tmp_path):
    spec = loaded.spec
    text = tmp_path / "cal.txt"
    text.write_text("abcab" * 40)
    monkeypatch.setattr(calibrate_mod, "CALIBRATION_TEXT", text)
    pieces = [chr(ord("a") + i) for i in range(spec.vocab_size)]
    with_tok = random_loaded(0, tokenizer=CharTokenizer(pieces))
    sequences, description = calibrate_mod.default_calibration(with_tok, 24)
    assert "cal.txt through the model's tokenizer" in description
    assert all(len(s) <= 24 for s in sequences) and sum(map(len, sequences)) == 192
    np.testing.assert_array_equal(sequences[0][:5], [0, 1, 2, 0, 1])
    # a tokenizer that cannot encode the text: seeded pseudo-random tokens
    bad_tok = random_loaded(0, tokenizer=CharTokenizer(["x"] * spec.vocab_size))
    sequences, description = calibrate_mod.default_calibration(bad_tok, 24)
    assert description.startswith("pseudo-random tokens")
    again, _ = calibrate_mod.default_calibration(loaded, 24)
    assert all(np.array_equal(a, b) for a, b in zip(sequences, again, strict=True))
    # given token ids, flat or nested, are cut at the context
    seqs, _ = calibrate_mod.calibration_sequences(loaded, list(range(20)) * 3, 24)
    assert [len(s) for s in seqs] == [24, 24, 12]
    seqs, _ = calibrate_mod.calibration_sequences(loaded, [[1, 2], [3] * 30], 24)
    assert [len(s) for s in seqs] == [2, 24, 6]
    qm = quantize(with_tok, context=16)
    assert "through the model's tokenizer" in qm.calibration and qm.context == 16
    assert qm.rope_cos.shape[0] == 16


def test_huggingface_model_end_to_end(tmp_path):
    from model_factory import tiny_hf_model

    from hardwire.gen.frontends import load_model
    path, _ = tiny_hf_model(tmp_path, dim=32, n_heads=2, n_kv_heads=1, ffn_dim=48, vocab=40,
                            ctx=20)
    loaded = load_model(path)
    qm = quantize(loaded)
    assert qm.tokenizer is loaded.tokenizer
    assert qm.scales["resid"] > 0 and len(qm.layers) == loaded.spec.n_layers
    tokens = GoldenModel(qm).generate([1, 5, 7], 6)
    assert len(tokens) >= 1 and all(0 <= t < 40 for t in tokens)


def test_kept_blocks_refused_when_out_of_range(loaded):
    w = loaded.weights["layers.0.wq"]
    bad = BlockQuantized(values=np.full(w.shape, 9, np.int8),
                         scales=np.ones((w.shape[0], 1), np.float32), bits=4,
                         group_size=w.shape[1], source_type="Q4_0")
    odd = type(loaded)(spec=loaded.spec, weights=loaded.weights, tokenizer=None, source="q.gguf",
                       format="gguf", block_quantized={"layers.0.wq": bad})
    with pytest.raises(ModelFormatError, match="layers.0.wq: block-quantized values outside"):
        quantize(odd, weights="keep")


def test_gguf_q4_0_kept_end_to_end(tmp_path):
    """A real Q4_0 file (negative block scales) keeps its integers and tracks the float model."""
    from model_factory import write_gguf

    from hardwire.gen.frontends import load_model
    from hardwire.gen.quality import evaluate
    base = random_loaded(2, dim=64, head_dim=16, n_heads=4, n_kv_heads=2, ffn_dim=64,
                         vocab_size=40)
    write_gguf(tmp_path / "m.gguf", base, qtype="Q4_0")
    loaded = load_model(tmp_path / "m.gguf")
    qm = quantize(loaded, weights="keep")
    assert qm.weight_format == "Q4_0" and len(loaded.block_quantized) == 16
    negative = 0
    for name, block in loaded.block_quantized.items():
        q = qm.linears()[name]
        np.testing.assert_array_equal(q.values, block.values)
        assert q.bits == 4 and q.group_size == 32
        negative += int((q.group_mult < 0).any())
    assert negative > 0
    result = evaluate(loaded, qm, np.random.default_rng(0).integers(0, 40, 30))
    assert result["top1_agreement"] >= 0.9
