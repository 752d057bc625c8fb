# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_bench import PAUSES, elaborate, run_unit

from hardwire.hdl.rmsnorm import RMSNorm
from hardwire.sim import golden_ops as g

TABLE = g.rsqrt_table().tolist()


def make(gain, shift, eps_int, lanes):
    return RMSNorm(gain=list(map(int, gain)), shift=shift, eps_int=eps_int, rsqrt_table=TABLE,
                   lanes=lanes)


def check(dut, vectors, pauses=(0.0, 0.0), seed=0):
    gain = list(dut._gain)
    got, ins, outs = run_unit(dut, [list(map(int, v)) for v in vectors], pauses=pauses,
                              seed=seed)
    for v, out in zip(vectors, got, strict=True):
        assert out == g.rmsnorm(v, gain, dut._shift, dut._eps, TABLE).tolist()
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(vectors)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(vectors) - 1)


def realistic(rng, d, count):
    # Residual-stream-like vectors: mostly moderate, a few outliers.
    scale = rng.choice([30, 1000, 8000], size=(count, 1))
    return np.clip(rng.normal(0, 1, (count, d)) * scale, -2**15, 2**15 - 1).astype(np.int64)


@pytest.mark.parametrize("d,lanes", [(1, 1), (48, 1), (61, 8), (61, 61), (64, 16)])
@pytest.mark.parametrize("pauses", PAUSES)
def test_random_vectors(d, lanes, pauses):
    rng = np.random.default_rng(d * 3 + lanes)
    gain = rng.integers(-2**15, 2**15, d)
    dut = make(gain, int(rng.integers(2, 12)), int(rng.integers(1, 5000)), lanes)
    check(dut, realistic(rng, d, 3), pauses, seed=lanes)


@pytest.mark.parametrize("shift", [-15, 0, 14, 24])
def test_extremes(shift):
    d = 7
    top, bot = 2**15 - 1, -2**15
    vectors = [[top] * d, [bot] * d, [0] * d, [top, bot, 0, 1, -1, top, bot],
               [1, 0, 0, 0, 0, 0, 0], [bot] + [0] * 6]
    gain = [top, bot, 1, -1, 0, 12345, -20000]
    for eps in (1, 2**40 - 1):
        check(make(gain, shift, eps, 3), np.array(vectors))
    outs = np.array([g.rmsnorm(v, gain, 0, 1, TABLE) for v in vectors])
    assert outs.min() == -128 and outs.max() == 127     # the extremes do saturate


def test_tiny_sum_negative_exponent():
    # u < 2^9: the mantissa is u shifted *left*, the exponent is negative.
    gain = [1 << 10] * 5
    vectors = np.array([[1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [3, -2, 1, 0, 7], [0] * 5])
    for v in vectors:
        assert g.rmsnorm_factor(int((v * v).sum()) + 1, TABLE)[1] < 0 or not v.any()
    check(make(gain, 2, 1, 2), vectors)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis(data):
    d = data.draw(st.integers(1, 40))
    lanes = data.draw(st.integers(1, d))
    gain = data.draw(st.lists(st.integers(-2**15, 2**15 - 1), min_size=d, max_size=d))
    shift = data.draw(st.integers(-15, 24))     # golden_ops is int64: keep the shift <= 62
    eps = data.draw(st.integers(1, 2**40 - 1) | st.integers(1, 100))
    mag = data.draw(st.sampled_from([3, 300, 2**15 - 1]))
    vec = st.lists(st.integers(-mag, min(mag, 2**15 - 1)), min_size=d, max_size=d)
    vectors = np.array([data.draw(vec) for _ in range(2)])
    check(make(gain, shift, eps, lanes), vectors, data.draw(st.sampled_from(PAUSES)))


def test_timing_and_roms():
    dut = elaborate(make(list(range(61)), 3, 7, 8))
    assert dut.latency == dut.cycles_per_vector == 2 * 8 + 2
    assert dut.gain_rom.depth == 8 and list(dut.rsqrt_rom.init) == TABLE
    assert list(dut.gain_rom.init[7]) == [56, 57, 58, 59, 60, 0, 0, 0]
    assert dut.sum_bits == (61 * 2**30 + 7).bit_length()


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"gain": []}, ValueError, "gain must not be empty"),
    ({"gain": [2**15]}, ValueError, r"gain\[0\] must be an integer in -32768..32767, not 32768"),
    ({"shift": -16}, ValueError, "shift must be an integer in -15..64, not -16"),
    ({"eps_int": 0}, ValueError, "eps_int must be an integer in 1..1099511627775, not 0"),
    ({"rsqrt_table": TABLE[:-1]}, ValueError, "rsqrt_table must have 768 entries, not 767"),
    ({"lanes": 3}, ValueError, "lanes must be an integer in 1..2, not 3"),
    ({"lanes": None}, TypeError, "lanes must be an integer in 1..2, not None"),
])
def test_parameter_errors(kwargs, exc, msg):
    args = {"gain": [1, 2], "shift": 0, "eps_int": 1, "rsqrt_table": TABLE, "lanes": 1} | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        RMSNorm(**args)
