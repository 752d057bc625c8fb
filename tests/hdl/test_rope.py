# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_bench import PAUSES, elaborate, run_unit

from hardwire.hdl.rope import RoPE
from hardwire.sim import golden_ops as g


def make(head_dim, n_heads, context, pairing, lanes, theta=10000.0):
    cos, sin = g.rope_tables(head_dim, theta, context)
    return RoPE(cos=cos.tolist(), sin=sin.tolist(), n_heads=n_heads, pairing=pairing,
                lanes=lanes), cos, sin


def check(dut, cos, sin, vectors, positions, pauses=(0.0, 0.0), seed=0):
    payloads = [{"v": list(map(int, v)), "pos": int(p)}
                for v, p in zip(vectors, positions, strict=True)]
    got, ins, outs = run_unit(dut, payloads, pauses=pauses, seed=seed)
    for v, p, out in zip(vectors, positions, got, strict=True):
        assert out == g.rope(v, p, cos, sin, dut.n_heads, dut.pairing).tolist()
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(vectors)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(vectors) - 1)


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("head_dim,n_heads,lanes", [
    (16, 3, 1), (16, 3, 3), (16, 3, 8), (16, 3, 16), (16, 3, 24), (10, 2, 4), (2, 1, 1)])
def test_random_vectors(head_dim, n_heads, lanes, pairing):
    rng = np.random.default_rng(head_dim * n_heads + lanes)
    context = 13
    dut, cos, sin = make(head_dim, n_heads, context, pairing, lanes)
    vectors = rng.integers(-128, 128, (3, head_dim * n_heads))
    check(dut, cos, sin, vectors, [context - 1, 0, int(rng.integers(context))])


@pytest.mark.parametrize("pauses", PAUSES)
def test_backpressure(pauses):
    rng = np.random.default_rng(5)
    dut, cos, sin = make(8, 3, 9, "half", 3)
    check(dut, cos, sin, rng.integers(-128, 128, (4, 24)), [3, 8, 0, 5], pauses, seed=3)


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_extremes_saturate(pairing):
    # (127, 127) rotated by 45 degrees has length 180 > 127 on one axis: saturates.
    head_dim, context = 8, 40
    dut, cos, sin = make(head_dim, 2, context, pairing, 2, theta=1.0)
    vectors = np.array([[127] * 16, [-128] * 16, [127, -128] * 8, [-128, 127] * 8, [0] * 16])
    positions = [1, 1, 37, 22, 5]
    check(dut, cos, sin, vectors, positions)
    outs = np.array([g.rope(v, p, cos, sin, 2, pairing)
                     for v, p in zip(vectors, positions, strict=True)])
    assert outs.max() == 127 and outs.min() == -128


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis(data):
    half = data.draw(st.integers(1, 8))
    n_heads = data.draw(st.integers(1, 4))
    lanes = data.draw(st.integers(1, half) | st.sampled_from(
        [half * k for k in range(1, n_heads + 1)]))
    context = data.draw(st.integers(1, 20))
    pairing = data.draw(st.sampled_from(["half", "interleaved"]))
    theta = data.draw(st.sampled_from([10000.0, 500000.0, 10.0]))
    dut, cos, sin = make(2 * half, n_heads, context, pairing, lanes, theta)
    n = 2 * half * n_heads
    vectors = [data.draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n))
               for _ in range(2)]
    positions = [data.draw(st.integers(0, context - 1)) for _ in range(2)]
    check(dut, cos, sin, np.array(vectors), positions, pauses=data.draw(st.sampled_from(PAUSES)))


def test_timing_and_rom():
    dut, cos, _ = make(16, 3, 5, "half", 3)
    elaborate(dut)
    assert dut.latency == dut.cycles_per_vector == 3 * 3 + 3     # 3 heads x ceil(8 / 3) chunks
    assert dut.rom.depth == 5 * 3                                 # no copy per head
    word = dut.rom.init[2 * 3 + 1]                                # position 2, chunk 1: pairs 3..5
    assert [int(word[l]["cos"]) for l in range(3)] == cos[2, 3:6].tolist()
    dut, _, _ = make(16, 3, 5, "half", 16)                        # two whole heads per cycle
    elaborate(dut)
    assert dut.latency == 2 + 3 and dut.rom.depth == 5
    assert dut.i.payload.shape().size == 48 * 8 + 3


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"pairing": "rotate"}, ValueError, "pairing must be 'half' or 'interleaved', not 'rotate'"),
    ({"n_heads": 0}, ValueError, "n_heads must be an integer >= 1, not 0"),
    ({"lanes": 13}, ValueError, "lanes must be an integer in 1..12, not 13"),
    ({"lanes": 5}, ValueError,
     r"lanes must be 1..4 or a multiple of 4 up to 12 \(pairs per cycle\), not 5"),
    ({"sin": [[0] * 4] * 2}, ValueError, r"sin must have the shape of cos \(3 x 4\), not 2 x 4"),
    ({"cos": [[0] * 4, [0] * 3, [0] * 4]}, ValueError,
     r"cos row 1 has 3 entries, expected 4 \(the length of row 0\)"),
    ({"cos": [[0] * 4, [0] * 4, [0, 0, 2**15, 0]]}, ValueError,
     r"cos\[2\]\[2\] must be an integer in -32768..32767, not 32768"),
])
def test_parameter_errors(kwargs, exc, msg):
    args = {"cos": [[0] * 4] * 3, "sin": [[0] * 4] * 3, "n_heads": 3, "pairing": "half",
            "lanes": 1} | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        RoPE(**args)
