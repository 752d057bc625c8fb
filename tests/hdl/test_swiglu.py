# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_bench import PAUSES, elaborate, run_unit

from hardwire.hdl.swiglu import SwiGLU
from hardwire.sim import golden_ops as g


def make(n, lanes, scale=0.05, ratio=0.01):
    table = g.silu_table(scale).tolist()
    M, s = g.multiplier(ratio)
    return SwiGLU(n=n, silu_table=table, M=M, s=s, lanes=lanes), table, M, s


def check(dut, table, M, s, gates, ups, pauses=(0.0, 0.0), seed=0):
    payloads = [{"gate": list(map(int, a)), "up": list(map(int, b))}
                for a, b in zip(gates, ups, strict=True)]
    got, ins, outs = run_unit(dut, payloads, pauses=pauses, seed=seed)
    for a, b, out in zip(gates, ups, got, strict=True):
        assert out == g.swiglu(a, b, table, M, s).tolist()
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(gates)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(gates) - 1)


@pytest.mark.parametrize("n,lanes", [(1, 1), (48, 1), (61, 6), (61, 61), (192, 64)])
@pytest.mark.parametrize("pauses", PAUSES)
def test_random_vectors(n, lanes, pauses):
    rng = np.random.default_rng(n * 7 + lanes)
    dut, table, M, s = make(n, lanes, scale=0.03, ratio=0.02)
    gates, ups = rng.integers(-128, 128, (2, 3, n))
    check(dut, table, M, s, gates, ups, pauses, seed=lanes)


@pytest.mark.parametrize("ratio", [1.0, 0.25, 2.0 ** -20])
def test_extremes_saturate(ratio):
    # Every gate/up extreme: with ratio 1 the product 127 * -128 saturates both ways.
    values = [-128, -127, -1, 0, 1, 126, 127]
    gates = np.array([[a for a in values for _ in values]])
    ups = np.array([[b for _ in values for b in values]])
    dut, table, M, s = make(gates.shape[1], 5, scale=1.0, ratio=ratio)
    check(dut, table, M, s, gates, ups)
    if ratio == 1.0:
        out = g.swiglu(gates[0], ups[0], table, M, s)
        assert out.min() == -128 and out.max() == 127


def test_zero_multiplier():
    dut = SwiGLU(n=3, silu_table=[5] * 256, M=0, s=1, lanes=2)
    check(dut, [5] * 256, 0, 1, np.array([[1, 2, 3]]), np.array([[4, 5, 6]]))


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis(data):
    n = data.draw(st.integers(1, 40))
    lanes = data.draw(st.integers(1, n))
    scale = data.draw(st.floats(0.001, 2.0))
    ratio = data.draw(st.floats(2.0 ** -30, 4.0))
    dut, table, M, s = make(n, lanes, scale, ratio)
    vec = st.lists(st.integers(-128, 127), min_size=n, max_size=n)
    gates = np.array([data.draw(vec) for _ in range(2)])
    ups = np.array([data.draw(vec) for _ in range(2)])
    check(dut, table, M, s, gates, ups, data.draw(st.sampled_from(PAUSES)))


def test_timing_and_rom():
    dut, table, _, _ = make(61, 6)
    elaborate(dut)
    assert dut.latency == dut.cycles_per_vector == 11 + 2
    assert list(dut.rom.init) == table


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"silu_table": [0] * 255}, ValueError, "silu_table must have 256 entries, not 255"),
    ({"silu_table": [0] * 255 + [128]}, ValueError,
     r"silu_table\[255\] must be an integer in -128..127, not 128"),
    ({"M": 2 ** 15}, ValueError, "M must be an integer in 0..32767, not 32768"),
    ({"s": 0}, ValueError, "s must be an integer in 1..62, not 0"),
    ({"lanes": 0}, ValueError, "lanes must be an integer in 1..4, not 0"),
])
def test_parameter_errors(kwargs, exc, msg):
    args = {"n": 4, "silu_table": [0] * 256, "M": 1 << 14, "s": 20, "lanes": 1} | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        SwiGLU(**args)
