# amaranth: UnusedElaboratable=no

import random

import numpy as np
import pytest
from amaranth import signed
from amaranth.hdl import Fragment
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hardwire.hdl.matvec import REQUANT_CYCLES, MatVec, accumulator_bits
from hardwire.hdl.stream_sim import (
    random_pauses,
    stream_check,
    stream_get_all,
    stream_monitor,
    stream_put,
    stream_put_all,
    watchdog,
)
from hardwire.sim import golden_ops


def reference(weights, vectors):
    """numpy golden model: one row of accumulators per input vector."""
    return (np.array(vectors, dtype=np.int64) @ np.array(weights, dtype=np.int64).T).tolist()


def random_matrix(rng, rows, cols):
    return [[rng.randint(-128, 127) for _ in range(cols)] for _ in range(rows)]


def simulate(dut, vectors, *, idle=0.0, stall=0.0, seed=0, banks=None):
    """Push ``vectors`` through ``dut``; returns (accumulators per vector, input transfer
    cycles, output transfer cycles). ``stream_check`` watches the output protocol.

    ``banks``: the ``bank`` of each vector, set before it is offered and changed to the next
    vector's right after its transfer (and to another bank after the last one), so a unit that
    read ``bank`` after the input transfer would compute with the wrong one."""
    rng = random.Random(seed)
    put_pause = random_pauses(rng, idle) if idle else None
    get_pause = random_pauses(rng, stall) if stall else None
    # Rows of each vector's bank (banks may differ in shape). Raw accumulators: one transfer
    # per row; requantized: one per vector, the bank's rows from element `bank_first` on.
    vector_banks = banks or [0] * len(vectors)
    vector_rows = [dut.bank_rows[b] for b in vector_banks]
    count = sum(vector_rows) if dut.requant is None else len(vectors)
    results, ins, outs, done = [], [], [], []

    async def producer(ctx):
        if banks is None:
            await stream_put_all(ctx, dut.i, vectors, pause=put_pause)
            return
        for vector, bank in zip(vectors, banks, strict=True):
            ctx.set(dut.bank, bank)
            await stream_put(ctx, dut.i, vector, pause=put_pause)
        ctx.set(dut.bank, (banks[-1] + 1) % dut.banks)

    async def consumer(ctx):
        got = await stream_get_all(ctx, dut.o, count, pause=get_pause)
        if dut.requant is None:
            results.extend(got)
        for payload, b in zip(got if dut.requant else [], vector_banks, strict=False):
            first = dut.bank_first(b)
            results.extend(payload[k] for k in range(first, first + dut.bank_rows[b]))
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
    firsts = [sum(vector_rows[:k]) for k in range(len(vectors) + 1)]
    per_vector = [results[firsts[k]:firsts[k + 1]] for k in range(len(vectors))]
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
    assert dut.latency == rows * chunks + 4
    # Throughput: a new vector every cycles_per_vector cycles, no bubble between vectors.
    assert [b - a for a, b in zip(ins, ins[1:], strict=False)] == [dut.cycles_per_vector] * 3
    assert [b - a for a, b in zip(outs, outs[1:], strict=False)] == [chunks] * (len(outs) - 1)
    # Latency: input transfer to the last row of that vector (always-ready consumer takes it
    # in the first cycle it is valid).
    assert [outs[(k + 1) * rows - 1] - ins[k] for k in range(4)] == [dut.latency] * 4
    assert outs[0] - ins[0] == chunks + 4


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


# --- weight formats, group multipliers, requantization (golden_ops.linear is the oracle) ---

RANGES = {8: (-128, 127), 5: (-16, 15), 4: (-8, 7), 2: (-1, 1)}


def random_format(rng, rows, cols, bits, group_size=None, *, negative=True):
    lo, hi = RANGES[bits]
    weights = [[rng.randint(lo, hi) for _ in range(cols)] for _ in range(rows)]
    if group_size is None:
        return weights, None
    n_groups = -(-cols // group_size)
    g_lo = -(2 ** 14) if negative else 0
    group_mult = [[rng.randint(g_lo, 2 ** 14) for _ in range(n_groups)] for _ in range(rows)]
    group_mult[0][-1] = -(2 ** 14) if negative else 2 ** 14      # the extremes are allowed
    return weights, group_mult


def golden(weights, vectors, group_mult, group_size, requant):
    """golden_ops.linear (or its accumulators without ``requant``), one list per vector."""
    w = np.array(weights, dtype=np.int64)
    gm = None if group_mult is None else np.array(group_mult, dtype=np.int64)
    out = []
    for x in vectors:
        x = np.array(x, dtype=np.int64)
        if requant is None:
            ones = np.ones(len(weights), dtype=np.int64)
            # M = 1, s = 0 would be the identity, but rshift_round wants s >= 1: use the
            # accumulators directly (the same _grouped_acc path through M=2, s=1).
            out.append(golden_ops.linear(x, w, ones * 2, ones, 64, group_mult=gm,
                                         group_size=group_size).tolist())
        else:
            M, shift, out_bits = requant
            out.append(golden_ops.linear(x, w, np.array(M), np.array(shift), out_bits,
                                         group_mult=gm, group_size=group_size).tolist())
    return out


def constants(rng, rows, scale_ratio):
    """Per-row (M, shift) from golden_ops.multiplier, each row's ratio jittered."""
    pairs = [golden_ops.multiplier(scale_ratio * rng.uniform(0.5, 2.0)) for _ in range(rows)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def check_format(weights, vectors, *, lanes, bits=8, group_size=None, group_mult=None,
                 requant=None, **pauses):
    dut = MatVec(weights=weights, lanes=lanes, bits=bits, group_size=group_size,
                 group_mult=group_mult, requant=requant)
    got, ins, outs = simulate(dut, vectors, **pauses)
    want = golden(weights, vectors, group_mult, group_size, requant)
    assert got == want
    return dut, want, ins, outs


def random_vectors(rng, count, cols):
    vs = [[rng.randint(-128, 127) for _ in range(cols)] for _ in range(count)]
    return [[-128] * cols, [127] * cols] + vs


@pytest.mark.parametrize("bits", [8, 5, 4, 2])
@pytest.mark.parametrize("lanes", [1, 3, 10])
def test_formats_raw_per_row(bits, lanes):
    rng = random.Random(bits * 100 + lanes)
    weights, _ = random_format(rng, 4, 10, bits)
    lo, hi = RANGES[bits]
    weights[0] = [lo] * 10                    # full negative range through the sign extension
    weights[1] = [hi] * 10
    dut, _, _, _ = check_format(weights, random_vectors(rng, 2, 10), lanes=lanes, bits=bits)
    assert dut.rom_bits == 4 * dut.chunks * lanes * bits
    # The ROM holds the values at `bits` width; reading a lane gives the signed weight back.
    assert [dut.rom.init[0][lane] for lane in range(lanes)] == weights[0][:lanes]


@pytest.mark.parametrize("bits", [8, 5, 4, 2])
@pytest.mark.parametrize(("cols", "group_size", "lanes"),
                         [(10, 4, 1), (10, 4, 3), (10, 4, 4), (12, 4, 2), (7, 7, 7), (9, 2, 2)])
def test_grouped_raw(bits, cols, group_size, lanes):
    # 10 / 4 and 9 / 2 have a shorter last group; negative group multipliers throughout.
    rng = random.Random(bits * 1000 + cols * 10 + lanes)
    weights, gm = random_format(rng, 3, cols, bits, group_size)
    dut, _, _, _ = check_format(weights, random_vectors(rng, 2, cols), lanes=lanes, bits=bits,
                                group_size=group_size, group_mult=gm)
    n_groups = -(-cols // group_size)
    sizes = [min(group_size, cols - j * group_size) for j in range(n_groups)]
    assert dut.chunks == sum(-(-s // lanes) for s in sizes)
    assert dut.acc_bits == (cols * 2 ** 28).bit_length() + 1
    assert dut.group_rom.depth == 3 * n_groups
    assert dut.rom_bits == 3 * dut.chunks * lanes * bits + 16 * 3 * n_groups


def test_grouped_accumulator_bound_reached():
    # w = x = -128, g = -2^14 on every group: acc = -n * 2^28 (negative extreme); g = 2^14
    # gives +n * 2^28, which needs every bit of acc_bits.
    n = 9
    weights = [[-128] * n, [-128] * n]
    gm = [[-(2 ** 14)] * 3, [2 ** 14] * 3]
    dut, want, _, _ = check_format(weights, [[-128] * n, [127] * n], lanes=4, group_size=4,
                                   group_mult=gm)
    assert want[0] == [-n * 2 ** 28, n * 2 ** 28]
    assert n * 2 ** 28 > 2 ** (dut.acc_bits - 2) - 1


@pytest.mark.parametrize("out_bits", [8, 16])
@pytest.mark.parametrize(("bits", "group_size", "lanes"),
                         [(8, None, 1), (8, None, 5), (4, 4, 3), (2, None, 16), (5, 5, 5),
                          (2, 6, 2), (4, None, 7)])
def test_requantized_saturates(out_bits, bits, group_size, lanes):
    rng = random.Random(out_bits + bits * 10 + lanes)
    rows, cols = 6, 16
    weights, gm = random_format(rng, rows, cols, bits, group_size)
    lo, hi = RANGES[bits]
    weights[0] = [hi] * cols
    weights[1] = [lo] * cols
    vectors = random_vectors(rng, 2, cols)
    # Pick the scale so that the largest magnitude lands at ~4x the output range: the extreme
    # rows saturate both ways, the random ones mostly do not.
    raw = golden(weights, vectors, gm, group_size, None)
    peak = max(abs(v) for vec in raw for v in vec) or 1
    M, shift = constants(rng, rows, 4 * 2 ** (out_bits - 1) / peak)
    M[2], shift[2] = 0, 1                     # M = 0: a zero row
    requant = (M, shift, out_bits)
    dut, want, _, _ = check_format(weights, vectors, lanes=lanes, bits=bits,
                                   group_size=group_size, group_mult=gm, requant=requant)
    flat = [v for vec in want for v in vec]
    assert max(flat) == 2 ** (out_bits - 1) - 1 and min(flat) == -(2 ** (out_bits - 1))
    assert any(-(2 ** (out_bits - 1)) < v < 2 ** (out_bits - 1) - 1 and v for v in flat)
    assert dut.signature.members["o"] == Out(stream.Signature(
        data.ArrayLayout(signed(out_bits), rows)))


def test_requant_rounding_ties_up():
    # acc * M = +-2^(s-1) (ties) and odd neighbours: round half toward +infinity.
    weights = [[1], [1], [1], [1]]
    requant = ([1, 1, 3, 1], [1, 2, 1, 62], 8)
    vectors = [[v] for v in (-3, -2, -1, 1, 2, 3, 127, -128)]
    check_format(weights, vectors, lanes=1, requant=requant)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(("idle", "stall"), [(0.5, 0.0), (0.0, 0.7), (0.5, 0.5)])
@pytest.mark.parametrize(("bits", "group_size", "lanes"), [(4, 3, 2), (2, None, 1), (8, 5, 5)])
def test_requant_pauses_on_both_streams(seed, idle, stall, bits, group_size, lanes):
    rng = random.Random(seed * 7 + lanes)
    weights, gm = random_format(rng, 5, 11, bits, group_size)
    M, shift = constants(rng, 5, 2 ** -10)
    check_format(weights, random_vectors(rng, 4, 11), lanes=lanes, bits=bits,
                 group_size=group_size, group_mult=gm, requant=(M, shift, 8),
                 idle=idle, stall=stall, seed=seed)


@pytest.mark.parametrize(("bits", "group_size", "lanes", "requant"),
                         [(4, 4, 3, True), (2, None, 1, True), (8, 3, 3, False),
                          (5, None, 11, True), (2, 11, 11, True), (8, None, 4, False)])
def test_timing_formats(bits, group_size, lanes, requant):
    rng = random.Random(lanes)
    rows, cols = 3, 11
    weights, gm = random_format(rng, rows, cols, bits, group_size)
    rq = (*constants(rng, rows, 2 ** -8), 16) if requant else None
    dut, _, ins, outs = check_format(weights, random_vectors(rng, 2, cols), lanes=lanes,
                                     bits=bits, group_size=group_size, group_mult=gm, requant=rq)
    g = group_size or cols
    sizes = [min(g, cols - k) for k in range(0, cols, g)]
    chunks = sum(-(-s // lanes) for s in sizes)
    assert dut.cycles_per_vector == rows * chunks
    assert dut.latency == rows * chunks + 4 + (REQUANT_CYCLES if requant else 0)
    assert [b - a for a, b in zip(ins, ins[1:], strict=False)] == [dut.cycles_per_vector] * 3
    if requant:
        assert [o - i for i, o in zip(ins, outs, strict=True)] == [dut.latency] * 4
        assert [b - a for a, b in zip(outs, outs[1:], strict=False)] == [
            dut.cycles_per_vector] * 3
    else:
        assert [outs[(k + 1) * rows - 1] - ins[k] for k in range(4)] == [dut.latency] * 4


def test_requant_single_row_single_column():
    check_format([[-1]], [[5], [-128], [127]], lanes=1, bits=2, requant=([16384], [14], 16))
    check_format([[3]], [[5], [-128]], lanes=1, bits=4, group_size=1, group_mult=[[-16384]],
                 requant=([32767], [20], 8), stall=0.5)


def test_requant_properties_and_roms():
    weights = [[1, -1, 0, 1, -1]] * 3
    dut = MatVec(weights=weights, lanes=2, bits=2, group_size=2, group_mult=[[1, -2, 3]] * 3,
                 requant=([100, 200, 300], [5, 6, 62], 16))
    assert dut.signature.members["i"] == In(stream.Signature(data.ArrayLayout(signed(8), 5)))
    assert (dut.bits, dut.group_size, dut.n_groups, dut.chunks, dut.out_bits) == (2, 2, 3, 3, 16)
    assert dut.requant == ((100, 200, 300), (5, 6, 62), 16)
    assert dut.rom.depth == 9 and dut.group_rom.depth == 9 and dut.requant_rom.depth == 3
    assert dut.rom_bits == 9 * 2 * 2 + 9 * 16 + 3 * 21
    assert [dut.rom.init[2][lane] for lane in range(2)] == [-1, 0]    # short last group padded
    assert [dut.group_rom.init[k] for k in range(3)] == [1, -2, 3]
    assert dut.requant_rom.init[2] == {"m": 300, "shift_minus_one": 61}
    Fragment.get(dut, None)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"bits": 3}, ValueError, "bits must be 8, 5, 4 or 2, not 3"),
    ({"bits": True}, ValueError, "bits must be 8, 5, 4 or 2, not True"),
    ({"bits": 4, "weights": [[1] * 7, [0] * 6 + [8]]}, ValueError,
     "weights[1][6] must be an integer in -8..7, not 8"),
    ({"bits": 5, "weights": [[-17] * 7, [0] * 7]}, ValueError,
     "weights[0][0] must be an integer in -16..15, not -17"),
    ({"bits": 2, "weights": [[1] * 7, [0, 2] + [0] * 5]}, ValueError,
     "weights[1][1] must be an integer in -1..1, not 2"),
    ({"group_size": 3}, ValueError, "group_size and group_mult must be given together"),
    ({"group_mult": [[1] * 3] * 2}, ValueError,
     "group_size and group_mult must be given together"),
    ({"group_size": 0, "group_mult": [[1]] * 2}, ValueError,
     "group_size must be an integer in 1..7, not 0"),
    ({"group_size": 8, "group_mult": [[1]] * 2}, ValueError,
     "group_size must be an integer in 1..7, not 8"),
    ({"group_size": 2, "group_mult": [[1] * 4] * 2}, ValueError,
     "lanes must be an integer in 1..2, not 3"),
    ({"group_size": 3, "group_mult": [[1] * 3]}, ValueError,
     "group_mult must have 2 rows (one per output), not 1"),
    ({"group_size": 3, "group_mult": [[1] * 3, [1] * 2]}, ValueError,
     "group_mult[1] must have 3 entries, not 2"),
    ({"group_size": 3, "group_mult": [[1] * 3, [1, 16385, 1]]}, ValueError,
     "group_mult[1][1] must be an integer in -16384..16384, not 16385"),
    ({"group_size": 3, "group_mult": [[1, 1, -16385], [1] * 3]}, ValueError,
     "group_mult[0][2] must be an integer in -16384..16384, not -16385"),
    ({"group_size": 3, "group_mult": 7}, TypeError,
     "group_mult must be a list of rows of integers, not 7"),
    ({"requant": 5}, TypeError, "requant must be a tuple (M, shift, out_bits), not 5"),
    ({"requant": ([1, 1], [1, 1])}, TypeError,
     "requant must be a tuple (M, shift, out_bits), not ([1, 1], [1, 1])"),
    ({"requant": ([1, 32768], [1, 1], 8)}, ValueError,
     "requant M[1] must be an integer in 0..32767, not 32768"),
    ({"requant": ([-1, 1], [1, 1], 8)}, ValueError,
     "requant M[0] must be an integer in 0..32767, not -1"),
    ({"requant": ([1], [1, 1], 8)}, ValueError, "requant M must have 2 entries, not 1"),
    ({"requant": ([1, 1], [0, 1], 8)}, ValueError,
     "requant shift[0] must be an integer in 1..62, not 0"),
    ({"requant": ([1, 1], [1, 63], 8)}, ValueError,
     "requant shift[1] must be an integer in 1..62, not 63"),
    ({"requant": ([1, 1], [1, 1.5], 8)}, TypeError,
     "requant shift[1] must be an integer in 1..62, not 1.5"),
    ({"requant": ([1, 1], [1, 1], 32)}, ValueError,
     "requant out_bits must be 8 or 16, not 32"),
])
def test_format_construction_errors(kwargs, error, message):
    args = {"weights": [[1] * 7, [2] * 7], "lanes": 3, **kwargs}
    with pytest.raises(error) as info:
        MatVec(**args)
    assert str(info.value) == message


# --- parameter banks: one datapath, `banks` stacked parameter sets, `bank` per vector ---

BANK_ORDER = [1, 0, 2, 1, 2, 0]


def split(values, banks):
    """``values`` (stacked) cut into ``banks`` equal parts, or ``None``."""
    if values is None:
        return [None] * banks
    per = len(values) // banks
    return [list(values[b * per:(b + 1) * per]) for b in range(banks)]


def check_banked(weights, vectors, order, *, lanes, banks, bits=8, group_size=None,
                 group_mult=None, requant=None, **pauses):
    """Simulate a banked unit and compare each vector with ``golden`` on its bank's parameters
    alone (the reference of the unbanked tests)."""
    dut = MatVec(weights=weights, lanes=lanes, bits=bits, group_size=group_size,
                 group_mult=group_mult, requant=requant, banks=banks)
    got, ins, outs = simulate(dut, vectors, banks=order, **pauses)
    ws, gms = split(weights, banks), split(group_mult, banks)
    if requant is None:
        rqs = [None] * banks
    else:
        rqs = [(m, s, requant[2])
               for m, s in zip(split(requant[0], banks), split(requant[1], banks), strict=True)]
    want = [golden(ws[b], [x], gms[b], group_size, rqs[b])[0]
            for x, b in zip(vectors, order, strict=True)]
    assert got == want
    return dut, ins, outs


def random_banked(rng, banks, rows, cols, bits, group_size=None, requant_bits=None):
    weights, gm = random_format(rng, banks * rows, cols, bits, group_size)
    rq = None
    if requant_bits is not None:
        raw = golden(weights, [[127] * cols], gm, group_size, None)[0]
        peak = max(abs(v) for v in raw) or 1
        rq = (*constants(rng, banks * rows, 2 ** (requant_bits - 1) / peak), requant_bits)
    return weights, gm, rq


@pytest.mark.parametrize(("bits", "group_size", "lanes", "requant_bits"),
                         [(8, None, 3, None), (4, 4, 2, None), (2, None, 11, 8),
                          (5, 3, 3, 16), (8, None, 1, 8)])
def test_banks_timing_back_to_back(bits, group_size, lanes, requant_bits):
    # Back-to-back vectors of different banks keep the unbanked timing exactly.
    rng = random.Random(bits * 100 + lanes)
    banks, rows, cols = 3, 3, 11
    weights, gm, rq = random_banked(rng, banks, rows, cols, bits, group_size, requant_bits)
    dut, ins, outs = check_banked(weights, random_vectors(rng, 4, cols), BANK_ORDER,
                                  lanes=lanes, banks=banks, bits=bits, group_size=group_size,
                                  group_mult=gm, requant=rq)
    single = MatVec(weights=weights[:rows], lanes=lanes, bits=bits, group_size=group_size,
                    group_mult=None if gm is None else gm[:rows],
                    requant=None if rq is None else (rq[0][:rows], rq[1][:rows], rq[2]))
    assert (dut.out_features, dut.chunks) == (rows, single.chunks)
    assert (dut.cycles_per_vector, dut.latency) == (single.cycles_per_vector, single.latency)
    count = len(BANK_ORDER)
    assert [b - a for a, b in zip(ins, ins[1:], strict=False)] == [
        dut.cycles_per_vector] * (count - 1)
    last = [k if rq else (k + 1) * rows - 1 for k in range(count)]
    assert [outs[last[k]] - ins[k] for k in range(count)] == [dut.latency] * count


@pytest.mark.parametrize(("idle", "stall"), [(0.5, 0.0), (0.0, 0.6), (0.5, 0.5)])
@pytest.mark.parametrize(("bits", "group_size", "lanes", "requant_bits"),
                         [(4, 3, 2, 8), (8, None, 5, None), (2, 5, 5, None)])
def test_banks_pauses_on_both_streams(idle, stall, bits, group_size, lanes, requant_bits):
    rng = random.Random(lanes * 10 + bits)
    weights, gm, rq = random_banked(rng, 2, 4, 10, bits, group_size, requant_bits)
    order = [1, 0, 0, 1, 1, 0]
    check_banked(weights, random_vectors(rng, 4, 10), order, lanes=lanes, banks=2, bits=bits,
                 group_size=group_size, group_mult=gm, requant=rq, idle=idle, stall=stall,
                 seed=lanes)


def test_banks_single_row_single_word():
    # One row of one chunk per bank: every word is a bank's first and last.
    weights = [[3], [-7], [5]]
    check_banked(weights, [[v] for v in (9, -128, 127, 1, 0, -5)], BANK_ORDER, lanes=1,
                 banks=3, bits=4)
    check_banked(weights, [[v] for v in (9, -128, 127, 1, 0, -5)], BANK_ORDER, lanes=1,
                 banks=3, bits=4, requant=([100, 200, 300], [2, 3, 4], 8), stall=0.5)


def test_banks_roms_are_the_separate_roms_stacked():
    rng = random.Random(11)
    banks, rows, cols = 3, 2, 5
    weights, gm, rq = random_banked(rng, banks, rows, cols, 4, 2, 16)
    dut = MatVec(weights=weights, lanes=2, bits=4, group_size=2, group_mult=gm, requant=rq,
                 banks=banks)
    parts = [MatVec(weights=weights[b * rows:(b + 1) * rows], lanes=2, bits=4, group_size=2,
                    group_mult=gm[b * rows:(b + 1) * rows],
                    requant=(rq[0][b * rows:(b + 1) * rows], rq[1][b * rows:(b + 1) * rows], 16))
             for b in range(banks)]
    assert dut.signature.members["bank"] == In(range(banks))
    assert "bank" not in parts[0].signature.members
    assert (dut.banks, dut.out_features, dut.in_features, parts[0].banks) == (3, 2, 5, 1)
    assert dut.weights == tuple(tuple(row) for row in weights)
    assert dut.group_mult == tuple(tuple(row) for row in gm)
    assert dut.requant == (tuple(rq[0]), tuple(rq[1]), 16)
    assert dut.rom_bits == sum(p.rom_bits for p in parts)
    for name in ("rom", "group_rom", "requant_rom"):
        rom = getattr(dut, name)
        stacked = [word for p in parts for word in getattr(p, name).init]
        assert rom.depth == len(stacked)
        assert list(rom.init) == stacked
    Fragment.get(dut, None)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"banks": 0}, ValueError, "banks must be an integer >= 1, not 0"),
    ({"banks": True}, TypeError, "banks must be an integer >= 1, not True"),
    ({"banks": 2.0}, TypeError, "banks must be an integer >= 1, not 2.0"),
    ({"banks": 3}, ValueError, "weights must have a multiple of banks = 3 rows, not 4"),
    ({"banks": 2, "group_size": 3, "group_mult": [[1] * 3] * 2}, ValueError,
     "group_mult must have 4 rows (one per output of each of 2 banks), not 2"),
    ({"banks": 2, "requant": ([1] * 2, [1] * 4, 8)}, ValueError,
     "requant M must have 4 entries, not 2"),
    ({"banks": 4, "requant": ([1] * 4, [1] * 5, 8)}, ValueError,
     "requant shift must have 4 entries, not 5"),
])
def test_banks_construction_errors(kwargs, error, message):
    args = {"weights": [[1] * 7, [2] * 7, [3] * 7, [4] * 7], "lanes": 3, **kwargs}
    with pytest.raises(error) as info:
        MatVec(**args)
    assert str(info.value) == message


# --- banks of different shapes: one multiplier array for matrices of several sizes ---

# (rows, inputs) per bank: the widest bank is not the first, and one bank has a single row.
MIXED = [(3, 8), (5, 12), (1, 4), (4, 12)]


def random_mixed(rng, shapes, bits, group_size=None, out_bits=None):
    """Stacked weights, group multipliers and requantization of banks of ``shapes``."""
    weights, gm, ms, shifts = [], [], [], []
    for rows, cols in shapes:
        w, g = random_format(rng, rows, cols, bits, group_size)
        weights += w
        gm += g or []
        if out_bits is not None:
            raw = golden(w, [[127] * cols], g, group_size, None)[0]
            m, s = constants(rng, rows, 2 ** 7 / (max(abs(v) for v in raw) or 1))
            ms, shifts = ms + m, shifts + s
    rq = None if out_bits is None else (ms, shifts, out_bits)
    return weights, (gm or None), rq


def check_mixed(shapes, order, *, lanes, bits=8, group_size=None, out_bits=None, seed=0,
                rows_per_cycle=1, **pauses):
    """Each vector, on its bank alone, equals ``golden``; the inputs beyond its bank's are
    random (they must not matter)."""
    rng = random.Random(seed)
    weights, gm, rq = random_mixed(rng, shapes, bits, group_size, out_bits)
    dut = MatVec(weights=weights, lanes=lanes, bits=bits, group_size=group_size,
                 group_mult=gm, requant=rq, banks=[r for r, _ in shapes],
                 rows_per_cycle=rows_per_cycle)
    width = max(c for _, c in shapes)
    vectors = [[rng.randint(-128, 127) for _ in range(width)] for _ in order]
    got, ins, outs = simulate(dut, vectors, banks=order, seed=seed, **pauses)
    firsts = [sum(r for r, _ in shapes[:b]) for b in range(len(shapes) + 1)]
    for x, b, result in zip(vectors, order, got, strict=True):
        rows, cols = shapes[b]
        part = slice(firsts[b], firsts[b + 1])
        bank_rq = None if rq is None else (rq[0][part], rq[1][part],
                                           out_bits[b] if isinstance(out_bits, tuple)
                                           else out_bits)
        want = golden(weights[part], [x[:cols]], None if gm is None else gm[part], group_size,
                      bank_rq)[0]
        assert result == want, f"bank {b}"
    return dut, ins, outs


MIXED_ORDER = [1, 0, 2, 3, 1, 3, 0, 2, 2, 1]


@pytest.mark.parametrize(("bits", "group_size", "lanes", "out_bits"), [
    (8, None, 4, None), (8, None, 12, (8, 16, 16, 8)), (4, 4, 4, 16), (2, None, 5, (16, 8, 8, 8)),
    (5, 4, 3, (8, 8, 16, 16)), (8, None, 1, 8)])
def test_mixed_banks_timing_back_to_back(bits, group_size, lanes, out_bits):
    # Back-to-back vectors of banks of different sizes: each keeps its own bank's timing,
    # which is the timing of a MatVec of that bank alone.
    dut, ins, outs = check_mixed(MIXED, MIXED_ORDER, lanes=lanes, bits=bits,
                                 group_size=group_size, out_bits=out_bits, seed=lanes + bits)
    assert dut.bank_rows == tuple(r for r, _ in MIXED)
    assert dut.bank_in_features == tuple(c for _, c in MIXED)
    assert (dut.in_features, dut.out_features) == (12, 5)
    chunks = [-(-c // lanes) if group_size is None else
              -(-c // group_size) * -(-group_size // lanes) for _, c in MIXED]
    assert dut.bank_chunks == tuple(chunks)
    cycles = [dut.bank_cycles_per_vector(b) for b in MIXED_ORDER]
    assert cycles == [MIXED[b][0] * chunks[b] for b in MIXED_ORDER]
    assert [b - a for a, b in zip(ins, ins[1:], strict=False)] == cycles[:-1]
    ends = (list(range(len(MIXED_ORDER))) if out_bits is not None else
            [sum(MIXED[b][0] for b in MIXED_ORDER[:k + 1]) - 1 for k in range(len(ins))])
    assert [outs[e] - i for e, i in zip(ends, ins, strict=True)] == [
        dut.bank_latency(b) for b in MIXED_ORDER]
    assert dut.latency == max(dut.bank_latency(b) for b in range(len(MIXED)))


@pytest.mark.parametrize(("idle", "stall"), [(0.5, 0.0), (0.0, 0.6), (0.5, 0.5)])
@pytest.mark.parametrize(("bits", "group_size", "lanes", "out_bits"), [
    (8, None, 5, (8, 16, 16, 8)), (4, 4, 2, None), (8, 2, 2, 16)])
def test_mixed_banks_pauses_on_both_streams(idle, stall, bits, group_size, lanes, out_bits):
    check_mixed(MIXED, MIXED_ORDER, lanes=lanes, bits=bits, group_size=group_size,
                out_bits=out_bits, seed=lanes * 7 + bits, idle=idle, stall=stall)


def test_mixed_banks_saturate_to_their_own_width():
    # The same rows as an 8-bit and a 16-bit bank: the 8-bit one saturates, the other not.
    weights = [[127] * 4] * 2
    dut = MatVec(weights=weights, lanes=2, requant=([1, 1], [1, 1], (8, 16)), banks=[1, 1])
    got, _, _ = simulate(dut, [[127] * 4, [127] * 4], banks=[0, 1])
    assert got == [[127], [2 * 127 * 127]]
    assert dut.bank_out_bits(0) == 8 and dut.bank_out_bits(1) == 16 and dut.out_bits == 16
    assert dut.rom_bits == 8 * 2 * 2 * 2 + 22 * 2


def test_mixed_banks_roms_are_the_separate_roms_stacked():
    rng = random.Random(5)
    shapes = [(2, 6), (3, 9), (1, 3)]
    weights, gm, rq = random_mixed(rng, shapes, 4, 3, (16, 8, 16))
    dut = MatVec(weights=weights, lanes=3, bits=4, group_size=3, group_mult=gm, requant=rq,
                 banks=[2, 3, 1])
    firsts = [0, 2, 5, 6]
    parts = [MatVec(weights=weights[a:b], lanes=3, bits=4, group_size=3, group_mult=gm[a:b],
                    requant=(rq[0][a:b], rq[1][a:b], ob))
             for a, b, ob in zip(firsts[:-1], firsts[1:], (16, 8, 16), strict=True)]
    assert dut.requant[2] == (16, 8, 16)
    assert list(dut.rom.init) == [w for p in parts for w in p.rom.init]
    assert list(dut.group_rom.init) == [g for p in parts for g in p.group_rom.init]
    assert list(dut.requant_rom.init) == [
        {**w, "narrow": ob == 8} for p, ob in zip(parts, (16, 8, 16), strict=True)
        for w in p.requant_rom.init]
    Fragment.get(dut, None)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"banks": [2, 1]}, ValueError, "banks must add up to the 4 weight rows, not 3"),
    ({"banks": [2, 0, 2]}, ValueError, "banks[1] must be an integer >= 1, not 0"),
    ({"banks": []}, ValueError, "banks must be an integer >= 1 or a list of row counts, not []"),
    ({"weights": [[1] * 7, [2] * 7, [3] * 4, [4] * 5], "banks": [2, 2]}, ValueError,
     "weights row 3 has 5 columns, expected 4 (the length of row 2)"),
    ({"weights": [[1] * 8, [2] * 8, [3] * 6, [4] * 6], "banks": [2, 2], "group_size": 4,
      "group_mult": [[1] * 2] * 4}, ValueError,
     "bank 1 (6 inputs in groups of 4) does not chunk like bank 0 (8 inputs): use a group "
     "size that divides every bank's inputs"),
    ({"weights": [[1] * 8, [2] * 8, [3] * 4, [4] * 4], "banks": [2, 2], "group_size": 4,
      "group_mult": [[1] * 2] * 4}, ValueError, "group_mult[2] must have 1 entries, not 2"),
    ({"banks": [2, 2], "requant": ([1] * 4, [1] * 4, (8, 16, 8))}, ValueError,
     "requant out_bits must be 8, 16 or one of them per bank (2), not (8, 16, 8)"),
    ({"banks": [2, 2], "requant": ([1] * 4, [1] * 4, (8, 12))}, ValueError,
     "requant out_bits must be 8 or 16, not 12"),
])
def test_mixed_banks_construction_errors(kwargs, error, message):
    args = {"weights": [[1] * 7, [2] * 7, [3] * 7, [4] * 7], "lanes": 3, **kwargs}
    with pytest.raises(error) as info:
        MatVec(**args)
    assert str(info.value) == message


def test_a_vector_offered_during_a_stall_is_computed():
    # The output holds one vector nobody takes and the last stage a second one: the unit
    # must not take a third vector it cannot start (it would never be computed).
    dut = MatVec(weights=[[1, 2], [3, 4]], lanes=2, requant=([1, 1], [1, 1], 16))
    vectors = [[1, 1], [2, 2], [3, 3]]
    got, ins, outs = simulate(dut, vectors, idle=0.9, stall=0.95, seed=3)
    assert got == golden([[1, 2], [3, 4]], vectors, None, None, ([1, 1], [1, 1], 16))


# --- R rows a cycle: R x lanes multipliers, each ROM word R rows' chunks ---

@pytest.mark.parametrize(("R", "bits", "group_size", "lanes", "out_bits"), [
    (2, 8, None, 4, (8, 16, 16, 8)), (3, 4, 4, 4, 16), (2, 2, None, 12, (16, 8, 8, 8)),
    (4, 5, 4, 3, (8, 8, 16, 16)), (2, 8, None, 1, 8), (5, 8, None, 6, 16)])
def test_rows_per_cycle_timing_back_to_back(R, bits, group_size, lanes, out_bits):
    # Banks of 3, 5, 1 and 4 rows: most need zero rows to fill their last R-row group. Each
    # vector takes ceil(rows / R) * chunks cycles, exactly, and computes what its bank alone
    # does.
    dut, ins, outs = check_mixed(MIXED, MIXED_ORDER, lanes=lanes, bits=bits,
                                 group_size=group_size, out_bits=out_bits, seed=R * 10 + lanes,
                                 rows_per_cycle=R)
    assert dut.rows_per_cycle == R
    chunks = dut.bank_chunks
    cycles = [-(-MIXED[b][0] // R) * chunks[b] for b in MIXED_ORDER]
    assert [dut.bank_cycles_per_vector(b) for b in MIXED_ORDER] == cycles
    assert [b - a for a, b in zip(ins, ins[1:], strict=False)] == cycles[:-1]
    assert [o - i for o, i in zip(outs, ins, strict=True)] == [
        dut.bank_latency(b) for b in MIXED_ORDER]
    assert dut.out_features == max(-(-r // R) * R for r, _ in MIXED)
    assert [dut.bank_first(b) for b in range(4)] == [
        dut.out_features - -(-r // R) * R for r, _ in MIXED]


@pytest.mark.parametrize(("idle", "stall"), [(0.5, 0.0), (0.0, 0.6), (0.5, 0.5)])
@pytest.mark.parametrize(("R", "bits", "group_size", "lanes", "out_bits"), [
    (2, 8, None, 5, (8, 16, 16, 8)), (3, 4, 4, 2, 16)])
def test_rows_per_cycle_pauses_on_both_streams(idle, stall, R, bits, group_size, lanes,
                                               out_bits):
    check_mixed(MIXED, MIXED_ORDER, lanes=lanes, bits=bits, group_size=group_size,
                out_bits=out_bits, seed=R + lanes, rows_per_cycle=R, idle=idle, stall=stall)


def test_rows_per_cycle_roms_hold_r_rows_a_word():
    weights = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    dut = MatVec(weights=weights, lanes=2, requant=([10, 20, 30], [1, 2, 3], 16),
                 rows_per_cycle=2, group_size=2, group_mult=[[1, 2], [3, 4], [5, 6]])
    # Rows 0 and 1 side by side, then row 2 and a zero row; chunk 1 is the third input.
    assert [list(w) for w in dut.rom.init] == [[1, 2, 4, 5], [3, 0, 6, 0],
                                              [7, 8, 0, 0], [9, 0, 0, 0]]
    assert [list(w) for w in dut.group_rom.init] == [[1, 3], [2, 4], [5, 0], [6, 0]]
    assert [[dict(r) for r in w] for w in dut.requant_rom.init] == [
        [{"m": 10, "shift_minus_one": 0}, {"m": 20, "shift_minus_one": 1}],
        [{"m": 30, "shift_minus_one": 2}, {"m": 0, "shift_minus_one": 0}]]
    assert (dut.out_features, dut.bank_first(0), dut.cycles_per_vector) == (4, 0, 4)
    assert dut.rom_bits == 4 * 4 * 8 + 4 * 2 * 16 + 2 * 2 * 21
    with pytest.raises(ValueError, match=r"rows_per_cycle > 1 needs requant"):
        MatVec(weights=weights, lanes=2, rows_per_cycle=2)
    with pytest.raises(ValueError, match=r"rows_per_cycle must be an integer >= 1, not 0"):
        MatVec(weights=weights, lanes=2, rows_per_cycle=0)
