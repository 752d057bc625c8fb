# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from amaranth import signed
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_bench import PAUSES, elaborate, run_unit

from hardwire.hdl.residual import ResidualAdd
from hardwire.sim import golden_ops as g


def check(n, lanes, xs, ys, pauses=(0.0, 0.0), seed=0):
    dut = ResidualAdd(n=n, lanes=lanes)
    payloads = [{"x": list(map(int, x)), "y": list(map(int, y))}
                for x, y in zip(xs, ys, strict=True)]
    got, ins, outs = run_unit(dut, payloads, pauses=pauses, seed=seed)
    for x, y, out in zip(xs, ys, got, strict=True):
        assert out == g.residual_add(x, y).tolist()
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(xs)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(xs) - 1)
    return dut


@pytest.mark.parametrize("n,lanes", [(1, 1), (48, 1), (61, 7), (61, 61), (16, 16)])
@pytest.mark.parametrize("pauses", PAUSES)
def test_random_vectors(n, lanes, pauses):
    rng = np.random.default_rng(n * 100 + lanes)
    xs = rng.integers(-2**15, 2**15, (3, n))
    ys = rng.integers(-2**15, 2**15, (3, n))
    check(n, lanes, xs, ys, pauses, seed=lanes)


def test_saturation_extremes():
    top, bot = 2**15 - 1, -2**15
    xs = np.array([[top, bot, top, bot, 0, top]])
    ys = np.array([[top, bot, bot, top, bot, 1]])
    check(6, 4, xs, ys)
    assert g.residual_add(xs[0], ys[0]).tolist() == [top, bot, -1, -1, bot, top]


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis(data):
    n = data.draw(st.integers(1, 40))
    lanes = data.draw(st.integers(1, n))
    values = st.lists(st.integers(-2**15, 2**15 - 1), min_size=n, max_size=n)
    xs = [data.draw(values) for _ in range(2)]
    ys = [data.draw(values) for _ in range(2)]
    check(n, lanes, np.array(xs), np.array(ys), data.draw(st.sampled_from(PAUSES)))


def test_timing_formula():
    dut = elaborate(ResidualAdd(n=61, lanes=7))
    assert dut.latency == dut.cycles_per_vector == 10


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"n": 0, "lanes": 1}, ValueError, "n must be an integer >= 1, not 0"),
    ({"n": 4, "lanes": 5}, ValueError, "lanes must be an integer in 1..4, not 5"),
    ({"n": 4, "lanes": 1.5}, TypeError, "lanes must be an integer in 1..4, not 1.5"),
])
def test_parameter_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=f"^{msg}$"):
        ResidualAdd(**kwargs)


def test_signature():
    dut = elaborate(ResidualAdd(n=5, lanes=2))
    assert dut.i.payload.shape().size == 160
    assert dut.o.payload.shape().size == 80
    assert dut.o.payload.shape().elem_shape == signed(16)
