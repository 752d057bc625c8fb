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
        assert out == g.rmsnorm(v, gain, dut.shift, dut.eps_int, TABLE).tolist()
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
    assert dut.latency == dut.cycles_per_vector == 2 * 8 + 5
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


ORDER = [1, 0, 2, 1, 1, 2, 0]


@pytest.mark.parametrize("banks,d,lanes,same_shift", [(2, 5, 2, False), (3, 13, 4, False),
                                                      (3, 9, 9, True), (3, 1, 1, False)])
@pytest.mark.parametrize("pauses", [(0.0, 0.0), (0.4, 0.4)])
def test_banks(banks, d, lanes, same_shift, pauses):
    rng = np.random.default_rng(banks * 100 + d)
    gain = rng.integers(-2**15, 2**15, banks * d).tolist()
    shift = 5 if same_shift else [int(v) for v in rng.integers(-15, 25, banks)]
    eps = [int(v) for v in rng.integers(1, 2**40, banks)] if same_shift else \
        [int(v) for v in rng.integers(1, 5000, banks)]
    dut = RMSNorm(gain=gain, shift=shift, eps_int=eps, rsqrt_table=TABLE, lanes=lanes,
                  banks=banks)
    order = [b % banks for b in ORDER]
    vectors = realistic(rng, d, len(order))
    got, ins, outs = run_unit(dut, vectors.tolist(), banks=order, pauses=pauses, seed=d)
    shifts = [shift] * banks if same_shift else shift
    for v, b, out in zip(vectors, order, got, strict=True):
        assert out == g.rmsnorm(v, gain[b * d:(b + 1) * d], shifts[b], eps[b], TABLE).tolist()
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(order)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(order) - 1)
        assert dut.latency == 2 * -(-d // lanes) + 5


@pytest.mark.parametrize("pauses", [(0.0, 0.0), (0.4, 0.4)])
def test_bank_read_in_the_cycle_after_the_input(pauses):
    # The decoder's layer index changes at the edge where the layer output loops back into the
    # norm: the bank must count only in the cycle after the transfer (any other bank around it).
    banks, d, lanes = 3, 6, 2
    rng = np.random.default_rng(7)
    gain = rng.integers(-2**15, 2**15, banks * d).tolist()
    shift, eps = [3, 9, -4], [11, 2**39, 5000]
    dut = RMSNorm(gain=gain, shift=shift, eps_int=eps, rsqrt_table=TABLE, lanes=lanes,
                  banks=banks)
    order = [b % banks for b in ORDER]
    vectors = realistic(rng, d, len(order))
    got, _, _ = run_unit(dut, vectors.tolist(), banks=order, bank_after_input=True,
                         pauses=pauses, seed=3)
    for v, b, out in zip(vectors, order, got, strict=True):
        assert out == g.rmsnorm(v, gain[b * d:(b + 1) * d], shift[b], eps[b], TABLE).tolist()


def test_banks_roms_and_properties():
    dut = elaborate(RMSNorm(gain=list(range(10)), shift=[3, -2], eps_int=7, rsqrt_table=TABLE,
                            lanes=3, banks=2))
    assert dut.banks == 2 and dut.d == 5 and dut.gain == tuple(range(10))
    assert dut.shift == (3, -2) and dut.eps_int == (7, 7) and dut.rsqrt_table == tuple(TABLE)
    assert dut.gain_rom.depth == 4 and dut.latency == 2 * 2 + 5
    assert [list(w) for w in dut.gain_rom.init] == [[0, 1, 2], [3, 4, 0], [5, 6, 7], [8, 9, 0]]
    assert "bank" in dut.signature.members
    one = RMSNorm(gain=[1, 2], shift=[4], eps_int=[9], rsqrt_table=TABLE, lanes=1)
    assert one.banks == 1 and one.shift == 4 and one.eps_int == 9
    assert "bank" not in one.signature.members


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"banks": 0}, ValueError, "banks must be an integer >= 1, not 0"),
    ({"banks": 2.0}, TypeError, "banks must be an integer >= 1, not 2.0"),
    ({"gain": [1, 2, 3, 4, 5]}, ValueError,
     r"gain must have banks \* d entries, a multiple of 2, not 5"),
    ({"shift": [0, 1, 2]}, ValueError, "shift must have 2 entries, not 3"),
    ({"shift": [0, -16]}, ValueError, r"shift\[1\] must be an integer in -15..64, not -16"),
    ({"eps_int": [1]}, ValueError, "eps_int must have 2 entries, not 1"),
    ({"eps_int": "12"}, TypeError, "eps_int must be an integer in 1..1099511627775, not '12'"),
])
def test_banks_parameter_errors(kwargs, exc, msg):
    args = {"gain": [1, 2, 3, 4], "shift": 0, "eps_int": 1, "rsqrt_table": TABLE, "lanes": 1,
            "banks": 2} | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        RMSNorm(**args)
