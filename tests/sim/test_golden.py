
import numpy as np
import pytest
from quant_helpers import random_loaded

from hardwire.errors import HardwireError
from hardwire.gen.quality import cross_entropy
from hardwire.gen.quantize import quantize
from hardwire.sim import golden_ops as ops
from hardwire.sim.golden import TRACE_LAYER_POINTS, GoldenModel
from hardwire.sim.reference import FloatModel

# --- golden_ops edge cases ---------------------------------------------------------------------

def test_saturation_bounds():
    np.testing.assert_array_equal(ops.saturate([-1000, -129, -128, 127, 128, 1000], 8),
                                  [-128, -128, -128, 127, 127, 127])
    np.testing.assert_array_equal(ops.residual_add([32767, -32768, 100], [1, -1, -50]),
                                  [32767, -32768, 50])
    np.testing.assert_array_equal(ops.requant([1 << 20, -(1 << 20)], 1 << 14, 14, 8), [127, -128])


def test_rshift_round_ties_toward_plus_infinity():
    np.testing.assert_array_equal(ops.rshift_round([-3, -2, -1, 1, 2, 3, 5], 1),
                                  [-1, -1, 0, 1, 1, 2, 3])
    np.testing.assert_array_equal(ops.rshift_round([-6, -5, 6, 10], 2), [-1, -1, 2, 3])
    np.testing.assert_array_equal(ops.rshift_round([-7, 7], 0), [-7, 7])
    np.testing.assert_array_equal(ops.rshift_round([5, 5, 5], [0, 1, 2]), [5, 3, 1])


def test_argmax_lowest_index_wins_ties():
    assert ops.argmax([3, 7, 7, -1, 7]) == 1
    assert ops.argmax([-5, -5]) == 0


def test_attention_at_position_zero_returns_v():
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, 4 * 8)
    k = rng.integers(-128, 128, (1, 2 * 8))
    v = rng.integers(-128, 128, (1, 2 * 8))
    out = ops.attention(q, k, v, 4, 2, 20000, 20, ops.exp2_table())
    np.testing.assert_array_equal(out, np.repeat(v.reshape(2, 8), 2, axis=0).reshape(-1))


def test_attention_equal_scores_average_v():
    v = np.array([[10, -20], [30, 40]])
    out = ops.attention(np.zeros(2), np.zeros((2, 2)), v, 1, 1, 20000, 20, ops.exp2_table())
    np.testing.assert_array_equal(out, [20, 10])


def test_rmsnorm_of_zeros_and_tiny_u():
    table = ops.rsqrt_table()
    gain = np.full(16, 1000)
    np.testing.assert_array_equal(ops.rmsnorm(np.zeros(16), gain, 4, 1, table), np.zeros(16))
    assert ops.rmsnorm_factor(1, table) == (int(table[0]), -8)     # u = 1: m = 256, e = -8
    assert ops.rmsnorm_factor(1023, table)[1] == 0
    assert ops.rmsnorm_factor(1024, table)[1] == 2
    with pytest.raises(ValueError):
        ops.rmsnorm_factor(0, table)
    # one element of 1 (u = 1 + eps_int 0 ... ) : y = x R G 2^-(20 - 4 + S)
    x = np.zeros(16)
    x[3] = 1
    y = ops.rmsnorm(x, gain, 4, 0, table)
    assert y[3] == min(127, round(1 * int(table[0]) * 1000 / 2 ** 20))


def test_rmsnorm_matches_float():
    rng = np.random.default_rng(1)
    x = rng.integers(-3000, 3000, 64)
    s_r, s_n, gamma = 1e-3, 0.03, 1 + 0.1 * rng.standard_normal(64)
    from hardwire.gen.quantize import norm_constants
    G, S, eps_int = norm_constants(gamma, s_r, s_n, 1e-5)
    y = ops.rmsnorm(x, G, S, eps_int, ops.rsqrt_table())
    real = x * s_r * gamma / np.sqrt(np.mean((x * s_r) ** 2) + 1e-5) / s_n
    assert np.abs(y - np.clip(real, -128, 127)).max() <= 1.0


def test_tables():
    assert ops.rsqrt_table()[0] == 65472 and ops.rsqrt_table().shape == (768,)
    assert ops.exp2_table()[0] == 32768 and ops.exp2_table()[-1] == 16428
    cos, sin = ops.rope_tables(8, 10000.0, 5)
    assert (cos[0] == 1 << 14).all() and (sin[0] == 0).all()


# --- the golden model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    loaded = random_loaded(4)
    return loaded, quantize(loaded)


def test_golden_tracks_float(model):
    loaded, qm = model
    ids = list(np.random.default_rng(2).integers(0, loaded.spec.vocab_size, 24))
    floats = FloatModel(loaded).logits_for(ids)
    ints = GoldenModel(qm).logits_for(ids)
    assert ints.dtype == np.int64 and ints.shape == floats.shape
    agreement = (ints.argmax(axis=1) == floats.argmax(axis=1)).mean()
    assert agreement >= 0.8
    ce_float = cross_entropy(floats[:-1], ids[1:])
    ce_int = cross_entropy(ints[:-1] * qm.s_logit, ids[1:])
    assert abs(ce_int - ce_float) < 0.1 * ce_float + 0.05
    prompt = ids[:3]
    golden = GoldenModel(qm).generate(prompt, 12)
    reference = FloatModel(loaded).generate(prompt, 12)
    assert np.mean(np.array(golden) == np.array(reference)) >= 0.75


def test_trace_records_every_intermediate(model):
    _, qm = model
    golden = GoldenModel(qm)
    golden.step(5)
    trace = {}
    logits = golden.step(7, trace)
    spec = qm.spec
    expected = {"embed", "final_norm", "logits"} | {f"layers.{i}.{p}" for i in range(spec.n_layers)
                                                     for p in TRACE_LAYER_POINTS}
    assert set(trace) == expected
    np.testing.assert_array_equal(trace["logits"], logits)
    assert trace["layers.0.q"].shape == (spec.q_dim,)
    assert trace["layers.0.k"].shape == (spec.kv_dim,)
    for name in ("final_norm", "layers.1.hidden", "layers.0.attn_in"):
        assert trace[name].min() >= -128 and trace[name].max() <= 127
    np.testing.assert_array_equal(trace["layers.0.resid_attn"],
                                  ops.residual_add(trace["embed"], trace["layers.0.wo"]))
    # the trace of a step equals an independent recomputation from golden_ops
    layer = qm.layers[0]
    xn = ops.rmsnorm(trace["embed"], layer.attn_norm.gain, layer.attn_norm.shift,
                     layer.attn_norm.eps_int, qm.rsqrt)
    np.testing.assert_array_equal(xn, trace["layers.0.attn_in"])
    k = ops.linear(xn, layer.wk.values, layer.wk.M, layer.wk.shift, 8)
    np.testing.assert_array_equal(ops.rope(k, 1, qm.rope_cos, qm.rope_sin, spec.n_kv_heads,
                                           spec.rope_pairing), trace["layers.0.k"])


def test_reset_and_determinism(model):
    _, qm = model
    golden = GoldenModel(qm)
    first = golden.logits_for([1, 2, 3])
    assert golden.pos == 3
    golden.reset()
    assert golden.pos == 0
    np.testing.assert_array_equal(golden.logits_for([1, 2, 3]), first)
    assert golden.generate([4, 5], 5) == GoldenModel(qm).generate([4, 5], 5)


def test_errors_name_the_limit(model):
    _, qm = model
    golden = GoldenModel(qm)
    with pytest.raises(HardwireError, match=r"token id 29 is outside the vocabulary \(expected 0"):
        golden.step(qm.spec.vocab_size)
    with pytest.raises(HardwireError, match="token id -1"):
        golden.step(-1)
    with pytest.raises(HardwireError, match="must be an integer"):
        golden.step(1.5)
    for _ in range(qm.context):
        golden.step(1)
    with pytest.raises(HardwireError, match=f"context full: all {qm.context} positions"):
        golden.step(1)
    with pytest.raises(HardwireError, match="more than the context of 24"):
        golden.generate([1] * 20, 6)
    assert len(golden.generate([1] * 20, 5)) == 5            # the last new token is not fed
    with pytest.raises(HardwireError, match="at least one prompt token"):
        golden.generate([], 3)


def test_generate_stops_at_eos():
    loaded = random_loaded(4)
    probe = GoldenModel(quantize(loaded)).generate([1, 2], 4)
    eos_loaded = random_loaded(4, eos_id=probe[1])
    golden = GoldenModel(quantize(eos_loaded))
    assert golden.generate([1, 2], 4) == probe[:2]
    assert golden.generate([1, 2], 4, stop_at_eos=False) == probe
