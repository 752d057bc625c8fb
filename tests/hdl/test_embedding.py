# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_bench import PAUSES, elaborate, run_unit

from hardwire.hdl.embedding import Embedding
from hardwire.sim import golden_ops as g

QMAX = {"int8": 127, "int4": 7, "ternary": 1}


def make_table(rng, vocab, d, fmt, group_size=None, *, signed_groups=True):
    """Random table, scales and (with ``group_size``) group multipliers; signed ones (GGUF
    Q4_0/Q5_0 style) unless ``signed_groups`` is false. The first group of every row holds the
    row's largest magnitude, ``±2^14``, as the quantizer makes it."""
    q = QMAX[fmt]
    table = rng.integers(-q, q + 1, (vocab, d))
    ratios = rng.uniform(0.5, 3000.0, vocab)
    Ms, ss = zip(*(g.multiplier(r) for r in ratios), strict=True)
    gm = None
    if group_size:
        low = -2**14 if signed_groups else 0
        gm = rng.integers(low, 2**14 + 1, (vocab, -(-d // group_size)))
        gm[:, 0] = 2**14 * (rng.integers(0, 2, vocab) * 2 - 1 if signed_groups else 1)
    return table, np.array(Ms), np.array(ss), gm


def make(table, Ms, ss, gm, group_size, lanes):
    return Embedding(table=table.tolist(), M=Ms.tolist(), s=ss.tolist(), lanes=lanes,
                     group_mult=None if gm is None else gm.tolist(), group_size=group_size)


def check(dut, table, Ms, ss, gm, group_size, tokens, pauses=(0.0, 0.0), seed=0):
    got, ins, outs = run_unit(dut, [int(t) for t in tokens], pauses=pauses, seed=seed)
    for t, out in zip(tokens, got, strict=True):
        if t < len(table):
            assert out == g.embed(t, table, Ms, ss, group_mult=gm, group_size=group_size).tolist()
        else:
            assert out == [0] * table.shape[1]
    if pauses == (0.0, 0.0):
        expect = [dut.latency if t < len(table) else 1 for t in tokens]
        assert [o - i for i, o in zip(ins, outs, strict=True)] == expect
        assert np.diff(ins).tolist() == expect[:-1]


@pytest.mark.parametrize("fmt", ["int8", "int4", "ternary"])
@pytest.mark.parametrize("vocab,d,lanes", [(63, 48, 5), (7, 61, 61), (3, 1, 1)])
def test_per_row(fmt, vocab, d, lanes):
    rng = np.random.default_rng(vocab + d + lanes)
    table, Ms, ss, _ = make_table(rng, vocab, d, fmt)
    dut = make(table, Ms, ss, None, None, lanes)
    assert dut.weight_bits == {"int8": 8, "int4": 4, "ternary": 2}[fmt]
    check(dut, table, Ms, ss, None, None, [0, vocab - 1, *rng.integers(0, vocab, 2)])


@pytest.mark.parametrize("d,group_size,lanes", [(61, 16, 5), (61, 16, 16), (61, 16, 32),
                                                (64, 32, 64), (48, 16, 1)])
def test_grouped(d, group_size, lanes):
    rng = np.random.default_rng(d + lanes)
    table, Ms, ss, gm = make_table(rng, 11, d, "int4", group_size)
    dut = make(table, Ms, ss, gm, group_size, lanes)
    check(dut, table, Ms, ss, gm, group_size, [10, 0, 3, 7])


def test_unsigned_groups():
    rng = np.random.default_rng(4)
    table, Ms, ss, gm = make_table(rng, 6, 24, "int8", 8, signed_groups=False)
    dut = make(table, Ms, ss, gm, 8, 8)
    check(dut, table, Ms, ss, gm, 8, [5, 0, 2])


def test_negative_group_multipliers():
    # Q4_0-style negative block scales flip the sign of whole groups; -2^14 is in range, and
    # rounding of negative products must match rshift_round (ties toward +infinity).
    table = np.array([[7, -8, 3, -1, 1, 0, -7, 5], [127, -128, 1, -1, 2, -2, 3, -3]])
    Ms, ss = np.array([2**14 + 1, 2**15 - 1]), np.array([16, 17])
    gm = np.array([[-2**14, 2**14, -1, -12345], [-2**14, -2**14, -3, 2**14]])
    for lanes in (1, 2, 4):
        dut = make(table, Ms, ss, gm, 2, lanes)
        check(dut, table, Ms, ss, gm, 2, [0, 1, 1, 0])
    out = g.embed(1, table, Ms, ss, group_mult=gm, group_size=2)
    assert out[0] == -2**15 and out[1] == 2**15 - 1     # sign flipped and saturated
    ref = g.embed(1, table, Ms, ss, group_mult=np.abs(gm), group_size=2)
    assert (np.sign(out[4:6]) == -np.sign(ref[4:6])).all()


@pytest.mark.parametrize("pauses", PAUSES)
def test_backpressure_and_bad_ids(pauses):
    rng = np.random.default_rng(1)
    table, Ms, ss, gm = make_table(rng, 5, 20, "int8", 8)
    dut = make(table, Ms, ss, gm, 8, 3)
    check(dut, table, Ms, ss, gm, 8, [4, 5, 0, 7, 2, 6], pauses, seed=2)


def test_error_flag_is_sticky():
    from amaranth.sim import Simulator

    from hardwire.hdl.stream_sim import stream_get, stream_put
    table = np.array([[1, -1, 0]] * 5)
    dut = Embedding(table=table.tolist(), M=[1 << 14] * 5, s=[14] * 5, lanes=2)
    flags = []

    async def bench(ctx):
        for token in (1, 6, 2):
            await stream_put(ctx, dut.i, token)
            await stream_get(ctx, dut.o)
            flags.append(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert flags == [0, 1, 1]


def test_extremes_saturate():
    # Largest weights with the largest factor saturate int16; the smallest round to zero.
    table = np.array([[127, -128, 1, -1, 0, 64], [127, -128, 1, -1, 0, 64]])
    Ms, ss = np.array([2**15 - 1, 2**14]), np.array([1, 62])
    gm = np.array([[2**14, 2**14, 0], [1, 2**14, 2**14]])
    for group_mult, size in ((None, None), (gm, 2)):
        dut = make(table, Ms, ss, group_mult, size, 2)
        check(dut, table, Ms, ss, group_mult, size, [0, 1])
    out = g.embed(0, table, Ms, ss)
    assert out.max() == 2**15 - 1 and out.min() == -2**15


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis(data):
    vocab = data.draw(st.integers(1, 12))
    d = data.draw(st.integers(1, 30))
    fmt = data.draw(st.sampled_from(sorted(QMAX)))
    grouped = data.draw(st.booleans())
    size = data.draw(st.integers(1, d)) if grouped else None
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    table, Ms, ss, gm = make_table(rng, vocab, d, fmt, size)
    if grouped:
        n_groups = -(-d // size)
        lanes = data.draw(st.integers(1, size) | st.sampled_from(
            [size * k for k in range(1, n_groups + 1)]))
    else:
        lanes = data.draw(st.integers(1, d))
    dut = make(table, Ms, ss, gm, size, lanes)
    tokens = data.draw(st.lists(st.integers(0, (1 << max(1, (vocab - 1).bit_length())) - 1),
                                min_size=1, max_size=3))
    check(dut, table, Ms, ss, gm, size, tokens, data.draw(st.sampled_from(PAUSES)))


def test_timing_and_roms():
    rng = np.random.default_rng(0)
    table, Ms, ss, gm = make_table(rng, 4, 61, "ternary", 16)
    dut = elaborate(make(table, Ms, ss, gm, 16, 5))
    assert dut.latency == dut.cycles_per_vector == 4 * 4 + 4      # 4 groups x ceil(16 / 5)
    assert dut.rom.depth == 4 * 16 and dut.weight_bits == 2
    word = dut.rom.init[2 * 16 + 13]                               # token 2, group 3, chunk 1
    assert [int(w) for w in word["w"]] == table[2, 53:58].tolist()
    assert [int(x) for x in word["g"]] == [gm[2, 3]]
    dut = elaborate(make(table, Ms, ss, None, None, 61))
    assert dut.latency == 5 and dut.i.payload.shape().width == 2


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"table": [[1, 2], [3]]}, ValueError, r"table row 1 has 1 columns, expected 2 \(the length "
                                           r"of row 0\)"),
    ({"table": [[1, 200], [3, 4]]}, ValueError, r"table\[0\]\[1\] must be an integer in "
                                                r"-128..127, not 200"),
    ({"M": [1]}, ValueError, "M must have 2 entries, not 1"),
    ({"s": [1, 63]}, ValueError, r"s\[1\] must be an integer in 1..62, not 63"),
    ({"group_size": 1}, ValueError, "group_mult and group_size must be given together"),
    ({"group_size": 1, "group_mult": [[1, 2], [3, 2**14 + 1]]}, ValueError,
     r"group_mult\[1\]\[1\] must be an integer in -16384..16384, not 16385"),
    ({"group_size": 1, "group_mult": [[-2**14 - 1, 2], [3, 4]]}, ValueError,
     r"group_mult\[0\]\[0\] must be an integer in -16384..16384, not -16385"),
    ({"group_size": 1, "group_mult": [[1, 2]]}, ValueError, "group_mult must have 2 rows, not 1"),
    ({"lanes": 3}, ValueError, "lanes must be an integer in 1..2, not 3"),
])
def test_parameter_errors(kwargs, exc, msg):
    args = {"table": [[1, 2], [3, 4]], "M": [1, 2], "s": [1, 2], "lanes": 1} | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        Embedding(**args)
