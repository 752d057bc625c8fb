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
    assert dut.latency == dut.cycles_per_vector == 11 + 3
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


@pytest.mark.parametrize("banks,n,lanes,shared", [(2, 5, 2, ""), (3, 13, 4, ""),
                                                  (3, 9, 9, "M"), (3, 6, 3, "s"), (2, 1, 1, "")])
@pytest.mark.parametrize("pauses", [(0.0, 0.0), (0.4, 0.4)])
def test_banks(banks, n, lanes, shared, pauses):
    rng = np.random.default_rng(banks * 100 + n)
    tables = [g.silu_table(float(rng.uniform(0.01, 1.0))).tolist() for _ in range(banks)]
    Ms = [int(v) for v in rng.integers(0, 2**15, banks)]
    ss = [int(v) for v in rng.integers(10, 26, banks)]
    if shared == "M":
        Ms = [Ms[0]] * banks
    if shared == "s":
        ss = [ss[0]] * banks
    dut = SwiGLU(n=n, silu_table=sum(tables, []), M=Ms[0] if shared == "M" else Ms,
                 s=ss[0] if shared == "s" else ss, lanes=lanes, banks=banks)
    order = [b % banks for b in [1, 0, 2, 1, 1, 2, 0]]
    gates, ups = rng.integers(-128, 128, (2, len(order), n))
    payloads = [{"gate": a.tolist(), "up": u.tolist()} for a, u in zip(gates, ups, strict=True)]
    got, ins, outs = run_unit(dut, payloads, banks=order, pauses=pauses, seed=n)
    for a, u, b, out in zip(gates, ups, order, got, strict=True):
        assert out == g.swiglu(a, u, tables[b], Ms[b], ss[b]).tolist()
    if pauses == (0.0, 0.0):
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * len(order)
        assert np.diff(ins).tolist() == [dut.cycles_per_vector] * (len(order) - 1)
        assert dut.latency == -(-n // lanes) + 3


def test_banks_rom_and_properties():
    table = [(k * 7) % 256 - 128 for k in range(3 * 256)]
    dut = elaborate(SwiGLU(n=4, silu_table=table, M=[1, 2, 3], s=20, lanes=2, banks=3))
    assert dut.banks == 3 and dut.silu_table == tuple(table)
    assert dut.M == (1, 2, 3) and dut.s == (20, 20, 20)
    assert dut.rom.depth == 768 and list(dut.rom.init) == table
    assert dut.latency == dut.cycles_per_vector == 2 + 3 and "bank" in dut.signature.members
    one = SwiGLU(n=4, silu_table=table[:256], M=[5], s=[7], lanes=2)
    assert one.banks == 1 and one.M == 5 and one.s == 7 and "bank" not in one.signature.members


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"banks": 0}, ValueError, "banks must be an integer >= 1, not 0"),
    ({"banks": None}, TypeError, "banks must be an integer >= 1, not None"),
    ({"silu_table": [0] * 256}, ValueError, "silu_table must have 512 entries, not 256"),
    ({"M": [1, 2, 3]}, ValueError, "M must have 2 entries, not 3"),
    ({"M": [1, 2 ** 15]}, ValueError, r"M\[1\] must be an integer in 0..32767, not 32768"),
    ({"s": [20]}, ValueError, "s must have 2 entries, not 1"),
    ({"s": [20, 0]}, ValueError, r"s\[1\] must be an integer in 1..62, not 0"),
])
def test_banks_parameter_errors(kwargs, exc, msg):
    args = {"n": 4, "silu_table": [0] * 512, "M": 1 << 14, "s": 20, "lanes": 1, "banks": 2} | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        SwiGLU(**args)
