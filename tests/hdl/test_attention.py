# amaranth: UnusedElaboratable=no
"""Attention unit with its KV cache against ``golden_ops.attention`` over whole sequences."""

import random

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.hdl import Fragment
from amaranth.lib import data
from amaranth.lib.wiring import In
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hardwire.hdl.attention import Attention
from hardwire.hdl.stream_sim import random_pauses, stream_get, stream_put
from hardwire.sim import golden_ops as g

TABLE = g.exp2_table().tolist()
# (input idle probability, output backpressure probability): none, idle, backpressure, both.
PAUSES = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.6), (0.4, 0.4)]


def make(n_heads, n_kv_heads, head_dim, context, lanes, ratio=0.5, out_lanes=None):
    """A unit with ``(M_att, s_att) = multiplier(ratio)``, elaborated once (so it builds)."""
    M, s = g.multiplier(ratio)
    dut = Attention(n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, context=context,
                     M_att=M, s_att=s, exp2_table=TABLE, lanes=lanes, out_lanes=out_lanes)
    Fragment.get(dut, None)
    return dut


def simulate(dut, items, *, pauses=(0.0, 0.0), seed=0):
    """Send ``items`` (dicts q, k, v, pos; and bank when ``dut.banks > 1``) and collect one output
    per position below context. ``bank`` is set with each input and held until its output.

    Returns ``(outputs, trace)``; ``trace`` holds one tuple ``(i_valid, i_ready, o_valid, o_ready,
    error)`` per clock edge, as sampled at that edge.
    """
    rng = random.Random(seed)
    idle, stall = pauses
    put_pause = random_pauses(rng, idle) if idle else None
    get_pause = random_pauses(rng, stall) if stall else None
    n_out = sum(item["pos"] < dut.context for item in items)
    outputs, trace, done = [], [], []

    async def producer(ctx):
        for item in items:
            if dut.banks == 1:
                await stream_put(ctx, dut.i, item, pause=put_pause)
                continue
            ctx.set(dut.bank, item["bank"])
            await stream_put(ctx, dut.i, {key: item[key] for key in ("q", "k", "v", "pos")},
                             pause=put_pause)
            while item["pos"] < dut.context:        # hold `bank` until the output transfer
                _, _, valid, ready = await ctx.tick().sample(dut.o.valid, dut.o.ready)
                if valid and ready:
                    break

    async def consumer(ctx):
        for _ in range(n_out):
            value = await stream_get(ctx, dut.o, pause=get_pause)
            outputs.append([int(value[k]) for k in range(dut.n_heads * dut.head_dim)])
        # A few more cycles: a refused last input must not produce anything either.
        for _ in range(3):
            await ctx.tick()
        done.append(True)

    async def monitor(ctx):
        async for _, _, *sample in ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid,
                                                     dut.o.ready, dut.error):
            trace.append(tuple(sample))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(monitor)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert done
    return outputs, trace


def golden(dut, items, *, shared_cache=False):
    """The expected outputs, keeping a cache the way the spec says (rows 0..p are read): one per
    bank, each bank with its own ``(M_att, s_att)`` (``shared_cache``: one cache for all banks,
    what a unit whose banks interfered would compute)."""
    width = dut.n_kv_heads * dut.head_dim
    k_cache = np.zeros((dut.banks, dut.context, width), np.int64)
    v_cache = np.zeros((dut.banks, dut.context, width), np.int64)
    M_att, s_att = ((dut.M_att,), (dut.s_att,)) if dut.banks == 1 else (dut.M_att, dut.s_att)
    expected = []
    for item in items:
        p, b = item["pos"], item.get("bank", 0)
        if p >= dut.context:
            continue
        cache = 0 if shared_cache else b
        k_cache[cache, p], v_cache[cache, p] = item["k"], item["v"]
        expected.append(g.attention(item["q"], k_cache[cache, :p + 1], v_cache[cache, :p + 1],
                                    dut.n_heads, dut.n_kv_heads, M_att[b], s_att[b],
                                    TABLE).tolist())
    return expected


def check(dut, items, *, pauses=(0.0, 0.0), seed=0):
    """Outputs bit-exact, ``cycles(p)`` from every input transfer to its output's ``valid``,
    ``error`` exactly after refusals, no output for a refused position."""
    outputs, trace = simulate(dut, items, pauses=pauses, seed=seed)
    assert outputs == golden(dut, items)

    in_edges = [n for n, (iv, ir, *_) in enumerate(trace) if iv and ir]
    out_edges = [n for n, (_, _, ov, orr, _) in enumerate(trace) if ov and orr]
    rises = [n for n, s in enumerate(trace) if s[2] and (n == 0 or not trace[n - 1][2])]
    assert len(in_edges) == len(items)
    accepted = [(edge, item) for edge, item in zip(in_edges, items, strict=True)
                if item["pos"] < dut.context]
    assert len(rises) == len(out_edges) == len(accepted)
    for (edge, item), rise in zip(accepted, rises, strict=True):
        assert rise - edge == dut.cycles(item["pos"]), item["pos"]
    # One position at a time: nothing is accepted while a result is pending, and without idle
    # cycles the next input is taken at the edge after the output transfer (after a refusal:
    # at the next edge).
    done_edges = iter(out_edges)
    for index, edge in enumerate(in_edges):
        free = next(done_edges) if items[index]["pos"] < dut.context else edge
        if index + 1 < len(items):
            assert in_edges[index + 1] > free
            if pauses[0] == 0.0:
                assert in_edges[index + 1] == free + 1
    # `error` is high exactly between a refused transfer and the next accepted one.
    refused = False
    for n, sample in enumerate(trace):
        assert sample[4] == refused, n
        if n in in_edges:
            refused = items[in_edges.index(n)]["pos"] >= dut.context
    return outputs


def random_items(dut, rng, positions):
    H, G, hd = dut.n_heads, dut.n_kv_heads, dut.head_dim
    return [{"q": rng.integers(-128, 128, H * hd).tolist(),
             "k": rng.integers(-128, 128, G * hd).tolist(),
             "v": rng.integers(-128, 128, G * hd).tolist(), "pos": p} for p in positions]


def test_signature():
    dut = make(3, 1, 16, 37, 4)
    i_layout = dut.signature.members["i"].signature.members["payload"].shape
    assert i_layout == data.StructLayout({
        "q": data.ArrayLayout(signed(8), 48), "k": data.ArrayLayout(signed(8), 16),
        "v": data.ArrayLayout(signed(8), 16), "pos": unsigned(6)})
    assert dut.signature.members["o"].signature.members["payload"].shape == \
        data.ArrayLayout(signed(8), 48)
    assert dut.signature.members["error"].flow.name == "Out"
    assert len(dut.error) == 1
    assert make(1, 1, 4, 32, 1).signature.members["i"].signature.members[
        "payload"].shape["pos"].shape == unsigned(6)       # p = context stays representable


def test_sizes():
    dut = make(4, 2, 6, 37, 4)
    assert dut.chunks == 2
    assert dut.score_width == (6 << 14).bit_length() + 1 == 18
    assert dut.sum_width == (37 << 15).bit_length() == 21
    assert dut.acc_width == (37 << 22).bit_length() + 1 == 29
    assert dut.kv_cache_bits == 2 * 37 * 2 * 6 * 8
    assert dut.scratch_bits == 37 * 18


def test_cycles_formula():
    dut = make(3, 1, 16, 37, 5)                     # C = 4: post = 26 + 6 + 4 = 36
    assert dut.cycles(0) == 2 * 4 + 4 + 2 * (4 + 36) + 37
    assert dut.cycles(36) == 2 * 148 + 4 + 2 * (148 + 152) + 37
    with pytest.raises(ValueError, match=r"^position must be an integer in 0\.\.36, not 37$"):
        dut.cycles(37)


@pytest.mark.parametrize("lanes,out_lanes", [(8, 1), (8, 3), (2, 8)])
def test_output_lanes(lanes, out_lanes):
    # The output stage narrower (or wider) than the MACs: same values, its own cycle count.
    dut = make(3, 1, 8, 9, lanes, ratio=0.6, out_lanes=out_lanes)
    C, Co = dut.chunks, dut.out_chunks
    assert Co == -(-8 // out_lanes)
    post = 32 + Co
    assert dut.cycles(0) == 2 * C + 4 + 2 * (C + max(C + 4, post)) + post + 1
    check(dut, random_items(dut, np.random.default_rng(out_lanes), range(9)), seed=out_lanes)


@pytest.mark.parametrize("shape,lanes_list,positions", [
    ((3, 1, 16, 37), (1, 5, 16), 37),
    ((4, 2, 6, 10), (1, 4, 6), 10),
    ((1, 1, 8, 5), (3,), 5),
    ((2, 2, 3, 1), (2,), 1),
])
def test_random_sequence(shape, lanes_list, positions):
    rng = np.random.default_rng(sum(shape))
    for lanes in lanes_list:
        # Long sequences with one lane cost the most simulation time: cut them short.
        count = positions if lanes > 1 or positions <= 12 else 12
        dut = make(*shape, lanes, ratio=0.3 + lanes / 10)
        check(dut, random_items(dut, rng, range(count)), seed=lanes)


@pytest.mark.parametrize("pauses", PAUSES)
def test_stream_pauses(pauses):
    dut = make(4, 2, 6, 9, 4, ratio=1.3)
    rng = np.random.default_rng(7)
    # Positions 0..8 (8 = context - 1), then a new sequence from 0 overwriting the cache.
    check(dut, random_items(dut, rng, [*range(9), 0, 1, 2]), pauses=pauses, seed=3)


def patterned_items(dut, rng, count):
    """Extremes: rows of -128 / 127 / 0 / random, repeated rows (equal scores: ties) and one
    dominant key aligned with q."""
    H, G, hd = dut.n_heads, dut.n_kv_heads, dut.head_dim
    fills = [lambda n: [-128] * n, lambda n: [127] * n, lambda n: [0] * n,
             lambda n: rng.integers(-128, 128, n).tolist(),
             lambda n: rng.choice([-128, 127], n).tolist()]
    q_fixed = rng.choice([-128, 127], H * hd).tolist()
    items = []
    for p in range(count):
        kind = p % 4
        if kind == 0:                                  # same key everywhere: all scores tie
            q, k = q_fixed, [1] * (G * hd)
        elif kind == 1:                                # one key aligned with q dominates
            q, k = q_fixed, [max(-127, x) for x in q_fixed[:G * hd]]
        else:
            q = fills[rng.integers(len(fills))](H * hd)
            k = fills[rng.integers(len(fills))](G * hd)
        v = fills[rng.integers(len(fills))](G * hd)
        items.append({"q": q, "k": k, "v": v, "pos": p})
    return items


def max_shifts(dut, items):
    """The largest ``D >> 8`` over all heads and positions of ``items`` (spec arithmetic)."""
    group = dut.n_heads // dut.n_kv_heads
    keys = np.array([it["k"] for it in items]).reshape(len(items), dut.n_kv_heads, -1)
    largest = 0
    for p, item in enumerate(items):
        q = np.array(item["q"]).reshape(dut.n_heads, -1)
        for h in range(dut.n_heads):
            score = keys[:p + 1, h // group] @ q[h]
            D = -g.rshift_round((score - score.max()) * dut.M_att, dut.s_att)
            largest = max(largest, int((D >> 8).max()))
    return largest


@pytest.mark.parametrize("ratio", [0.0, 1e-4, 0.05, 0.7, 3.0, 40.0, 5000.0])
def test_extremes_and_scale_ratios(ratio):
    dut = make(3, 1, 16, 11, 8, ratio=ratio)
    rng = np.random.default_rng(int(ratio * 1000) + 1)
    items = patterned_items(dut, rng, 11)
    outputs = check(dut, items)
    shifts = max_shifts(dut, items)
    # Extreme scores make every ratio from 0.05 on saturate the shift (pr = 0 for D >> 8 >= 16).
    assert (shifts >= 16) == (ratio >= 0.05)
    assert any(max(map(abs, out)) >= 100 for out in outputs)


def row_with_sum(total, n):
    """``n`` int8 values summing to ``total``."""
    base, extra = divmod(total, n)
    return [base + 1] * extra + [base] * (n - extra)


@pytest.mark.parametrize("ratio", [1.0, 1.5])
def test_shift_and_rounding_boundaries(ratio):
    # q = all ones makes score[t] = sum(k[t]); with ratio 1.0 (M = 2^14, s = 14) D is the score
    # difference itself, so it lands exactly on the fraction and shift boundaries; with 1.5 odd
    # differences make rounding ties in D. (A single pr = EXP2[0] >> 15 = 1 at D = 3840 moves P
    # by 1 in 2^15: too little to show in any output, so that boundary is covered, not proven.)
    diffs = [0, 1, 3, 255, 256, 257, 3839, 3840, 3841, 4095, 4096, 4097, 8159]
    dut = make(1, 1, 32, len(diffs) + 1, 8, ratio=ratio)
    rng = np.random.default_rng(3)
    keys = [[127] * 32] + [row_with_sum(32 * 127 - d, 32) for d in diffs]
    items = [{"q": [1] * 32, "k": k, "v": rng.integers(-128, 128, 32).tolist(), "pos": p}
             for p, k in enumerate(keys)]
    check(dut, items)
    D = -g.rshift_round(-np.array(diffs) * dut.M_att, dut.s_att)
    if ratio == 1.0:
        assert D.tolist() == diffs
    else:
        assert (-np.array(diffs) * dut.M_att % (1 << dut.s_att) == 1 << (dut.s_att - 1)).any()


def test_refusal_keeps_the_cache():
    # context 4: pos 4 would alias row 0 if it were written with its address bits truncated.
    dut = make(2, 1, 5, 4, 2)
    rng = np.random.default_rng(11)
    items = random_items(dut, rng, range(4))
    bad = random_items(dut, rng, [4, 7])
    again = random_items(dut, rng, [3])
    again[0]["k"], again[0]["v"] = items[3]["k"], items[3]["v"]
    check(dut, items + bad + again + random_items(dut, rng, [5]))


@settings(max_examples=6, deadline=None)
@given(st.data())
def test_hypothesis_shapes(data):
    n_kv = data.draw(st.integers(1, 2))
    n_heads = n_kv * data.draw(st.integers(1, 3))
    head_dim = data.draw(st.integers(1, 7))
    context = data.draw(st.integers(1, 6))
    lanes = data.draw(st.integers(1, head_dim))
    ratio = data.draw(st.sampled_from([0.01, 0.5, 2.0, 100.0]))
    dut = make(n_heads, n_kv, head_dim, context, lanes, ratio=ratio)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    check(dut, random_items(dut, rng, range(context)),
          pauses=data.draw(st.sampled_from(PAUSES)))


GOOD = dict(n_heads=4, n_kv_heads=2, head_dim=6, context=9, M_att=20000, s_att=20,
            exp2_table=TABLE, lanes=2)


@pytest.mark.parametrize("change,exc,msg", [
    ({"n_heads": 0}, ValueError, "n_heads must be an integer >= 1, not 0"),
    ({"n_kv_heads": 3}, ValueError, "n_heads must be a multiple of n_kv_heads, not 4 and 3"),
    ({"head_dim": 2.0}, TypeError, "head_dim must be an integer >= 1, not 2.0"),
    ({"context": 0}, ValueError, "context must be an integer >= 1, not 0"),
    ({"M_att": 1 << 15}, ValueError, "M_att must be an integer in 0..32767, not 32768"),
    ({"s_att": 63}, ValueError, "s_att must be an integer in 0..62, not 63"),
    ({"s_att": True}, TypeError, "s_att must be an integer in 0..62, not True"),
    ({"exp2_table": TABLE[:255]}, ValueError, "exp2_table must have 256 entries, not 255"),
    ({"exp2_table": [32768] + [40000] * 255}, ValueError,
     "exp2_table[1] must be an integer in 0..32768, not 40000"),
    ({"exp2_table": [32767] * 256}, ValueError, "exp2_table[0] must be 32768, not 32767"),
    ({"lanes": 7}, ValueError, "lanes must be an integer in 1..6, not 7"),
    ({"lanes": 0}, ValueError, "lanes must be an integer in 1..6, not 0"),
    ({"banks": 0}, ValueError, "banks must be an integer >= 1, not 0"),
    ({"banks": True}, TypeError, "banks must be an integer >= 1, not True"),
    ({"banks": 3, "M_att": [1, 2]}, ValueError, "M_att must have 3 entries, not 2"),
    ({"banks": 2, "s_att": [20, 20, 20]}, ValueError, "s_att must have 2 entries, not 3"),
    ({"M_att": [1, 2]}, ValueError, "M_att must have 1 entries, not 2"),
    ({"banks": 2, "M_att": [1, 1 << 15]}, ValueError,
     "M_att[1] must be an integer in 0..32767, not 32768"),
    ({"banks": 2, "s_att": [5, True]}, TypeError, "s_att[1] must be an integer in 0..62, not True"),
    ({"banks": 2, "s_att": "ab"}, TypeError, "s_att must be an integer in 0..62, not 'ab'"),
])
def test_parameter_errors(change, exc, msg):
    with pytest.raises(exc) as info:
        Attention(**{**GOOD, **change})
    assert str(info.value) == msg


def make_banked(n_heads, n_kv_heads, head_dim, context, lanes, *, M_att, s_att):
    dut = Attention(n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, context=context,
                    M_att=M_att, s_att=s_att, exp2_table=TABLE, lanes=lanes, banks=len(M_att))
    Fragment.get(dut, None)
    return dut


def banked_items(dut, rng, banks_and_positions):
    return [{**random_items(dut, rng, [p])[0], "bank": b} for b, p in banks_and_positions]


# Per-bank softmax multipliers: ratio 0.3, 1.7 and (M, s) = (3, 0), an unshifted one.
BANK_M, BANK_S = zip(g.multiplier(0.3), g.multiplier(1.7), (3, 0), strict=True)


def test_banks_signature_and_sizes():
    dut = make_banked(4, 2, 6, 5, 4, M_att=BANK_M, s_att=BANK_S)
    one = make(4, 2, 6, 5, 4)
    assert dut.signature.members["bank"] == In(range(3))
    assert "bank" not in one.signature.members
    assert dut.signature.members["i"] == one.signature.members["i"]
    assert dut.signature.members["o"] == one.signature.members["o"]
    assert dut.banks == 3 and one.banks == 1
    assert dut.M_att == BANK_M and dut.s_att == BANK_S
    assert dut.kv_cache_bits == 3 * one.kv_cache_bits == 3 * 2 * 5 * 2 * 6 * 8
    assert dut.scratch_bits == one.scratch_bits
    assert [dut.cycles(p) for p in range(5)] == [one.cycles(p) for p in range(5)]
    m = dut.elaborate(None)
    assert m.submodules.k_mem.depth == m.submodules.v_mem.depth == 15
    assert m.submodules.score_mem.depth == 5 and m.submodules.exp2_rom.depth == 256
    Fragment.get(m, None)
    # One int stands for all banks; a one-entry list with banks=1 is the plain unit.
    same = Attention(**{**GOOD, "banks": 2, "M_att": 77, "s_att": [0, 9]})
    assert same.M_att == (77, 77) and same.s_att == (0, 9)
    single = Attention(**{**GOOD, "M_att": [77], "s_att": (9,)})
    assert single.M_att == 77 and single.s_att == 9 and "bank" not in single.signature.members


@pytest.mark.parametrize("M_att,s_att", [
    (BANK_M[:2], BANK_S[:2]),       # both muxed by bank
    ((16000, 16000), (0, 14)),      # constant multiplier, run-time shift
    ((9000, 30000), (15, 15)),      # run-time multiplier, constant shift
    ((20000, 20000), (14, 14)),     # both constant: only the caches are banked
])
def test_banks_alternating_caches_do_not_interfere(M_att, s_att):
    # bank 0 pos 0, bank 1 pos 0, bank 0 pos 1, ...: each output reads only its own bank's rows.
    dut = make_banked(2, 1, 5, 4, 3, M_att=M_att, s_att=s_att)
    rng = np.random.default_rng(21)
    items = banked_items(dut, rng, [(b, p) for p in range(4) for b in range(2)])
    outputs = check(dut, items)
    assert outputs != golden(dut, items, shared_cache=True)


@pytest.mark.parametrize("pauses", PAUSES[::3])
def test_banks_interleaved(pauses):
    dut = make_banked(4, 2, 6, 5, 4, M_att=BANK_M, s_att=BANK_S)
    rng = np.random.default_rng(5)
    order = [1, 0, 2, 1, 1, 0, 2, 2, 1, 0, 2, 1, 0]
    next_pos = [0, 0, 0]
    plan = []
    for b in order:
        plan.append((b, next_pos[b]))
        next_pos[b] += 1
    # A refused position for bank 2, then bank 0 restarts a sequence while bank 1 carries on.
    plan += [(2, 5), (0, 0), (1, next_pos[1]), (0, 1), (2, next_pos[2])]
    items = banked_items(dut, rng, plan)
    outputs = check(dut, items, pauses=pauses, seed=4)
    assert outputs != golden(dut, items, shared_cache=True)
