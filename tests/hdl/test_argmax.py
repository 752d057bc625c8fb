# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_bench import PAUSES, elaborate, run_unit

from hardwire.hdl.argmax import Argmax
from hardwire.sim import golden_ops as g


def check(lanes, vectors, pauses=(0.0, 0.0), seed=0):
    vectors = np.asarray(vectors)
    dut = Argmax(n=vectors.shape[1], lanes=lanes)
    got, ins, outs = run_unit(dut, [list(map(int, v)) for v in vectors], pauses=pauses,
                              seed=seed, convert=int)
    assert got == [g.argmax(v) for v in vectors]
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(vectors)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(vectors) - 1)


@pytest.mark.parametrize("n,lanes", [(1, 1), (63, 1), (63, 5), (29, 29), (48, 16)])
@pytest.mark.parametrize("pauses", PAUSES)
def test_random_logits(n, lanes, pauses):
    rng = np.random.default_rng(n + lanes)
    check(lanes, rng.integers(-2**15, 2**15, (3, n)), pauses, seed=n)


@pytest.mark.parametrize("lanes", [1, 3, 4, 13])
def test_ties_pick_lowest_index(lanes):
    n = 13
    top, bot = 2**15 - 1, -2**15
    vectors = [[bot] * n, [top] * n, [0] * n]
    for a, b in [(0, 12), (5, 6), (3, 7), (11, 12), (2, 9)]:
        v = [-5] * n
        v[a] = v[b] = 100
        vectors.append(v)
    v = [bot] * n
    v[12] = bot + 1                              # only the last, padded-slot element is larger
    vectors.append(v)
    check(lanes, vectors)


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_hypothesis(data):
    n = data.draw(st.integers(1, 50))
    lanes = data.draw(st.integers(1, n))
    small = data.draw(st.booleans())             # few distinct values: many ties
    values = st.integers(-3, 3) if small else st.integers(-2**15, 2**15 - 1)
    vectors = [data.draw(st.lists(values, min_size=n, max_size=n)) for _ in range(3)]
    check(lanes, vectors, data.draw(st.sampled_from(PAUSES)))


def test_timing_and_ports():
    dut = elaborate(Argmax(n=63, lanes=8))
    assert dut.latency == dut.cycles_per_vector == 8 + 1
    assert dut.o.payload.shape() == unsigned_bits(6)


def unsigned_bits(bits):
    from amaranth import unsigned
    return unsigned(bits)


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"n": 0, "lanes": 1}, ValueError, "n must be an integer >= 1, not 0"),
    ({"n": 8, "lanes": 9}, ValueError, "lanes must be an integer in 1..8, not 9"),
    ({"n": "8", "lanes": 1}, TypeError, "n must be an integer >= 1, not '8'"),
])
def test_parameter_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=f"^{msg}$"):
        Argmax(**kwargs)
