# amaranth: UnusedElaboratable=no

import random

import numpy as np
import pytest
from amaranth import signed
from amaranth.hdl import Fragment
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hardwire.hdl.matvec import MatVec, accumulator_bits
from hardwire.hdl.stream_sim import (
    random_pauses,
    stream_check,
    stream_get_all,
    stream_monitor,
    stream_put_all,
    watchdog,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def reference(weights, vectors):
    """numpy golden model: one row of accumulators per input vector."""
    return (np.array(vectors, dtype=np.int64) @ np.array(weights, dtype=np.int64).T).tolist()


def random_matrix(rng, rows, cols):
    return [[rng.randint(-128, 127) for _ in range(cols)] for _ in range(rows)]


def simulate(dut, vectors, *, idle=0.0, stall=0.0, seed=0):
    """Push ``vectors`` through ``dut``; returns (accumulators per vector, input transfer
    cycles, output transfer cycles). ``stream_check`` watches the output protocol."""
    rng = random.Random(seed)
    put_pause = random_pauses(rng, idle) if idle else None
    get_pause = random_pauses(rng, stall) if stall else None
    rows = dut.out_features
    results, ins, outs, done = [], [], [], []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, vectors, pause=put_pause)

    async def consumer(ctx):
        results.extend(await stream_get_all(ctx, dut.o, rows * len(vectors), pause=get_pause))
        # Nothing more may come out (no duplicated row).
        ctx.set(dut.o.ready, 1)
        for _ in range(dut.chunks + 3):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "an extra row came out"
        done.append(True)

    async def monitor_in(ctx):
        await stream_monitor(ctx, dut.i, ins)

    async def monitor_out(ctx):
        await stream_monitor(ctx, dut.o, outs)

    async def check_out(ctx):
        await stream_check(ctx, dut.o)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    for process in (monitor_in, monitor_out, check_out):
        sim.add_process(process)
    # A design that loses a row would leave the consumer waiting forever: bound the run.
    limit = 20 * (len(vectors) + 2) * (dut.cycles_per_vector + 2) + 100
    sim.add_process(watchdog(limit))
    sim.run()
    assert done
    per_vector = [results[k * rows:(k + 1) * rows] for k in range(len(vectors))]
    return per_vector, [c for c, _ in ins], [c for c, _ in outs]


def check(weights, lanes, vectors, **pauses):
    dut = MatVec(weights=weights, lanes=lanes)
    got, _, _ = simulate(dut, vectors, **pauses)
    assert got == reference(weights, vectors)
    return dut


def lane_choices(n):
    return sorted({1, min(3, n), max(1, n // 2), n})


SHAPES = [(5, 7), (13, 48), (3, 1), (1, 9)]


@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_random_weights_every_lane_count(rows, cols):
    rng = random.Random(rows * 1000 + cols)
    weights = random_matrix(rng, rows, cols)
    vectors = random_matrix(rng, 3, cols)
    for lanes in lane_choices(cols):
        check(weights, lanes, vectors)


@pytest.mark.parametrize("lanes", [1, 3, 32, 64])
def test_61x64(lanes):
    rng = random.Random(lanes)
    weights = random_matrix(rng, 61, 64)
    check(weights, lanes, random_matrix(rng, 1 if lanes == 1 else 2, 64))


@pytest.mark.parametrize(("w", "x"), [(-128, -128), (127, -128), (-128, 127), (127, 127)])
@pytest.mark.parametrize("lanes", [1, 4, 9])
def test_extremes(w, x, lanes):
    # (-128, -128) reaches the bound n * 2^14 of docs/numerics.md exactly.
    n = 9
    check([[w] * n] * 3, lanes, [[x] * n, [-1 - x] * n, [0] * n])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("idle", "stall"), [(0.5, 0.0), (0.0, 0.6), (0.5, 0.5)])
@pytest.mark.parametrize("lanes", [1, 3, 7])
def test_pauses_on_both_streams(seed, idle, stall, lanes):
    rng = random.Random(seed)
    weights = random_matrix(rng, 5, 7)
    check(weights, lanes, random_matrix(rng, 5, 7), idle=idle, stall=stall, seed=seed)


@pytest.mark.parametrize(("rows", "cols", "lanes"),
                         [(5, 7, 1), (5, 7, 3), (5, 7, 7), (13, 48, 5), (1, 9, 9), (1, 1, 1),
                          (3, 1, 1), (2, 10, 4)])
def test_timing_with_streams_always_ready(rows, cols, lanes):
    rng = random.Random(cols)
    weights = random_matrix(rng, rows, cols)
    vectors = random_matrix(rng, 4, cols)
    dut = MatVec(weights=weights, lanes=lanes)
    got, ins, outs = simulate(dut, vectors)
    assert got == reference(weights, vectors)
    chunks = -(-cols // lanes)
    assert dut.chunks == chunks
    assert dut.cycles_per_vector == rows * chunks
    assert dut.latency == rows * chunks + 1
    # Throughput: a new vector every cycles_per_vector cycles, no bubble between vectors.
    assert [b - a for a, b in zip(ins, ins[1:], strict=False)] == [dut.cycles_per_vector] * 3
    assert [b - a for a, b in zip(outs, outs[1:], strict=False)] == [chunks] * (len(outs) - 1)
    # Latency: input transfer to the last row of that vector (always-ready consumer takes it
    # in the first cycle it is valid).
    assert [outs[(k + 1) * rows - 1] - ins[k] for k in range(4)] == [dut.latency] * 4
    assert outs[0] - ins[0] == chunks + 1


def test_stall_does_not_lose_rows():
    # A consumer that refuses for long stretches while rows finish every cycle (lanes = n).
    rng = random.Random(5)
    weights = random_matrix(rng, 9, 4)
    check(weights, 4, random_matrix(rng, 6, 4), stall=0.85, seed=1)


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_hypothesis_shapes(draw):
    rows = draw.draw(st.integers(1, 6), label="rows")
    cols = draw.draw(st.integers(1, 12), label="cols")
    lanes = draw.draw(st.integers(1, cols), label="lanes")
    int8 = st.integers(-128, 127)
    weights = draw.draw(st.lists(st.lists(int8, min_size=cols, max_size=cols),
                                 min_size=rows, max_size=rows), label="weights")
    vectors = draw.draw(st.lists(st.lists(int8, min_size=cols, max_size=cols),
                                 min_size=1, max_size=3), label="vectors")
    idle = draw.draw(st.sampled_from([0.0, 0.4]), label="idle")
    stall = draw.draw(st.sampled_from([0.0, 0.4]), label="stall")
    check(weights, lanes, vectors, idle=idle, stall=stall)


def test_signature_and_properties():
    weights = [[k - 3 * o for k in range(10)] for o in range(4)]
    dut = MatVec(weights=weights, lanes=4)
    assert dut.signature.members["i"] == In(stream.Signature(data.ArrayLayout(signed(8), 10)))
    assert dut.signature.members["o"] == Out(stream.Signature(signed(accumulator_bits(10))))
    assert dut.acc_bits == (10 * 2 ** 14).bit_length() + 1 == 19
    assert (dut.in_features, dut.out_features, dut.lanes, dut.chunks) == (10, 4, 4, 3)
    assert dut.rom.depth == 12
    assert dut.rom_bits == 12 * 4 * 8
    assert dut.weights == tuple(tuple(row) for row in weights)
    # ROM word o*chunks + c holds W[o, 4c : 4c+4], the last chunk padded with zeros.
    for o in range(4):
        for c in range(3):
            word = dut.rom.init[o * 3 + c]
            padded = (weights[o] + [0, 0])[4 * c:4 * c + 4]
            assert [word[lane] for lane in range(4)] == padded
    Fragment.get(dut, None)


def test_accumulator_bits_is_tight():
    for n in (1, 7, 48, 64, 100, 1000):
        bits = accumulator_bits(n)
        assert -(2 ** (bits - 1)) <= -127 * 128 * n and n * 128 * 128 <= 2 ** (bits - 1) - 1
        assert n * 128 * 128 > 2 ** (bits - 2) - 1      # one bit fewer would overflow


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lanes": 0}, ValueError, "lanes must be an integer in 1..7, not 0"),
    ({"lanes": 8}, ValueError, "lanes must be an integer in 1..7, not 8"),
    ({"lanes": 2.0}, TypeError, "lanes must be an integer in 1..7, not 2.0"),
    ({"lanes": True}, TypeError, "lanes must be an integer in 1..7, not True"),
    ({"weights": [[1] * 7, [200] + [0] * 6]}, ValueError,
     "weights[1][0] must be an integer in -128..127, not 200"),
    ({"weights": [[1] * 6 + [-129]]}, ValueError,
     "weights[0][6] must be an integer in -128..127, not -129"),
    ({"weights": [[1] * 7, [0.5] * 7]}, TypeError,
     "weights[1][0] must be an integer in -128..127, not 0.5"),
    ({"weights": [[1] * 7, [1] * 6]}, ValueError,
     "weights row 1 has 6 columns, expected 7 (the length of row 0)"),
    ({"weights": []}, ValueError, "weights must have at least one row and one column"),
    ({"weights": [[]]}, ValueError, "weights must have at least one row and one column"),
    ({"weights": 5}, TypeError, "weights must be a list of rows of integers, not 5"),
])
def test_construction_errors(kwargs, error, message):
    args = {"weights": [[1] * 7, [2] * 7], "lanes": 3, **kwargs}
    with pytest.raises(error) as info:
        MatVec(**args)
    assert str(info.value) == message
