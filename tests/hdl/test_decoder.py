"""The whole decoder in the Amaranth simulator against the golden model, token for token."""

import dataclasses
import random

import pytest
from amaranth.hdl import ClockDomain, Fragment, Module
from amaranth.sim import Simulator
from quant_helpers import block_q8_0, random_loaded

from hardwire.errors import ConfigError
from hardwire.gen.hardware import HardwareConfig, decoder_params
from hardwire.gen.quantize import quantize
from hardwire.gen.serial_image import serial_image
from hardwire.hdl.decoder import Decoder
from hardwire.hdl.layer import requant_matvec
from hardwire.hdl.serial import SerialDecoder
from hardwire.hdl.stream_sim import random_pauses, watchdog
from hardwire.sim.golden import GoldenModel

SHAPE = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=24, vocab_size=19,
             max_seq_len=12)
LANES = 4


# The serial engine simulates ~5x slower per token: its protocol tests run a narrower model with
# the same vocabulary and context, so every token id and position below means the same.
SERIAL_SHAPE = dict(SHAPE, dim=8, head_dim=4, ffn_dim=16)


def tiny_qm(seed=None, engine="lanes", **overrides):
    shape = SERIAL_SHAPE if engine == "serial" else SHAPE
    if seed is None:        # seed 3 draws a narrow model that repeats two tokens
        seed = 7 if engine == "serial" else 3
    return quantize(random_loaded(seed, **{**shape, **overrides}), weights="int8")


ENGINES = ("lanes", "serial")


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def qm(engine):
    return tiny_qm(engine=engine)


def build(engine, qm, *, lanes=LANES, context=None):
    """The decoder of ``qm`` on either engine: both must pass every protocol test here."""
    if engine == "serial":
        return SerialDecoder(image=serial_image(qm, context))
    return Decoder(params=decoder_params(qm, HardwareConfig(lanes=lanes, context=context)))


@pytest.fixture(scope="module")
def decoder(qm, engine):
    return build(engine, qm)


def run(dut, script, *, idle=0.0, stall=0.0, seed=0, limit=None):
    """Run ``script``: a list of ``(prompt, max_new)`` or ``(prompt, max_new, opts)`` sequences.
    A prompt token may be an int or ``(token, last)``.

    ``opts``: ``"start"`` (default true) pulses ``start`` before the prompt; ``"interrupt"``,
    ``("start", k)``, lets the token after the ``k``-th one arrive and wait on ``o`` (``ready``
    low), then pulses ``start`` with ``ready`` high (recording ``o.valid`` in that cycle as
    ``valid_at_start``) and ends the sequence there; ``("reset", k)`` pulses the synchronous
    reset of the ``sync`` domain right after the ``k``-th token and ends the sequence there.
    ``idle``/``stall``: probabilities of an idle cycle (``i.ready`` high, ``i.valid`` low) before
    each prompt token and of ``o.ready`` low in a cycle (seeded by ``seed``).

    Returns per sequence the emitted tokens, the cycles of their transfers (``cycles``) and of
    the prompt transfers (``in_cycles``), and the status flags sampled after the sequence.
    ``limit``: clock edges before the run counts as hung (default: 40 of the slowest tokens)."""
    if limit is None:
        limit = 30_000 + 40 * dut.cycles_per_token(dut.context - 1)
    rng = random.Random(seed)
    put_pause = random_pauses(rng, idle) if idle else None
    get_pause = random_pauses(rng, stall) if stall else None
    results = []
    top = Module()
    top.domains.sync = domain = ClockDomain("sync")
    top.submodules.dut = dut

    async def bench(ctx):
        cycle = 0

        def tick():
            nonlocal cycle
            cycle += 1
            return ctx.tick()

        for prompt, max_new, *rest in script:
            opts = rest[0] if rest else {}
            r = {"in_cycles": [], "tokens": [], "cycles": []}
            if opts.get("start", True):
                ctx.set(dut.start, 1)
                await tick()
                ctx.set(dut.start, 0)
            ctx.set(dut.max_new, max_new)
            items = [(t, k == len(prompt) - 1) if isinstance(t, int) else t
                     for k, t in enumerate(prompt)]
            for token, last in items:
                if put_pause is not None:
                    # Idle while the decoder is ready, so that it sees the gaps.
                    while not (await tick().sample(dut.i.ready))[2]:
                        pass
                    while next(put_pause):
                        await tick()
                ctx.set(dut.i.payload, {"token": token, "last": int(last)})
                ctx.set(dut.i.valid, 1)
                while not (await tick().sample(dut.i.ready))[2]:
                    pass
                r["in_cycles"].append(cycle)
                ctx.set(dut.i.valid, 0)
            kind, at = opts.get("interrupt", (None, None))
            while True:
                ready = get_pause is None or not next(get_pause)
                ctx.set(dut.o.ready, ready)
                # Wait for busy to drop (the prompt has run) or a token.
                _, _, valid, payload, busy = await tick().sample(
                    dut.o.valid, dut.o.payload, dut.busy)
                if ready and valid:
                    r["tokens"].append(payload.token)
                    r["cycles"].append(cycle)
                    if payload.last:
                        break
                    if kind == "start" and len(r["tokens"]) == at:
                        ctx.set(dut.o.ready, 0)
                        while not (await tick().sample(dut.o.valid))[2]:
                            pass
                        ctx.set(dut.o.ready, 1)
                        ctx.set(dut.start, 1)
                        r["valid_at_start"] = (await tick().sample(dut.o.valid))[2]
                        break
                    if kind == "reset" and len(r["tokens"]) == at:
                        ctx.set(domain.rst, 1)
                        await tick()
                        ctx.set(domain.rst, 0)
                        break
                elif not busy:
                    break
            ctx.set(dut.start, 0)
            ctx.set(dut.o.ready, 0)
            await tick()
            r.update(busy=ctx.get(dut.busy), error=ctx.get(dut.error),
                     context_full=ctx.get(dut.context_full), ready=ctx.get(dut.i.ready))
            results.append(r)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)

    sim.add_process(output_check(dut))
    sim.add_process(watchdog(limit))
    sim.run()
    return results


def output_check(dut):
    """:func:`hardwire.hdl.stream_sim.stream_check` on ``dut.o``, except that ``start`` (like
    ``rst``) may drop a token that waits on ``o``: in its cycle ``o.valid`` must be low."""
    async def process(ctx):
        cycle, held = 0, None
        while True:
            _, rst, start, valid, ready, payload = await ctx.tick().sample(
                dut.start, dut.o.valid, dut.o.ready, dut.o.payload)
            if rst or start:
                assert not valid, f"cycle {cycle}: o.valid high in a start/reset cycle"
                held = None
            else:
                if held is not None:
                    assert valid, f"cycle {cycle}: valid dropped before the transfer of {held!r}"
                    assert payload == held, f"cycle {cycle}: payload changed before the transfer"
                held = payload if valid and not ready else None
            cycle += 1
    return process


def golden(qm, prompt, n_new):
    return GoldenModel(qm).generate(prompt, n_new)


def test_config_validation():
    with pytest.raises(ConfigError, match=r"^lanes must be a positive integer, not 0$"):
        HardwareConfig(lanes=0)
    with pytest.raises(ConfigError, match=r"^lanes must be a positive integer, not 'x'$"):
        HardwareConfig(lanes="x")
    with pytest.raises(ConfigError,
                       match=r"^context must be a positive integer or None, not True$"):
        HardwareConfig(lanes=2, context=True)


def test_params_are_plain_and_fused(qm):
    p = decoder_params(qm, HardwareConfig(lanes=LANES))
    layer = p["layers"][0]
    spec = qm.spec
    assert len(layer["qkv"]["weights"]) == spec.q_dim + 2 * spec.kv_dim
    assert layer["qkv"]["M"][spec.q_dim] == int(qm.layers[0].wk.M[0])
    assert len(layer["w13"]["weights"]) == 2 * spec.ffn_dim
    assert layer["w13"]["weights"][spec.ffn_dim] == tuple(int(v) for v in qm.layers[0].w3.values[0])
    assert layer["rope"]["n_heads"] == spec.n_heads + spec.n_kv_heads

    def plain(value):
        if isinstance(value, dict):
            return all(plain(v) for v in value.values())
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        return value is None or type(value) in (int, str)
    assert plain(p)
    with pytest.raises(ConfigError, match="context must be at most"):
        decoder_params(qm, HardwareConfig(lanes=2, context=qm.context + 1))


def test_generation_matches_golden(qm, decoder):
    script = [([3, 7, 1], 5), ([11], 4), ([0, 18, 5, 5, 9], 3)]
    results = run(decoder, script)
    for (prompt, n), r in zip(script, results, strict=True):
        assert r["tokens"] == golden(qm, prompt, n), prompt
        assert not r["error"] and not r["context_full"] and not r["busy"]


def test_cycles_per_token(qm, decoder):
    prompt, n = [2, 4], 6
    r = run(decoder, [(prompt, n)])[0]
    assert r["tokens"] == golden(qm, prompt, n)
    measured = [b - a for a, b in zip(r["cycles"], r["cycles"][1:], strict=False)]
    # Token k + 1 is emitted after token k was fed back at position len(prompt) + k.
    assert measured == [decoder.cycles_per_token(len(prompt) + k) for k in range(n - 1)]


@pytest.mark.parametrize("lanes", [1, 4, 16, 24])
def test_one_mac_array_computes_every_matrix(lanes):
    # Every layer's qkv, wo, w13, w2 and the head are banks of one MatVec, each with the
    # timing of a unit of its own (so the cycles are those of separate units), and the cycles
    # by work add up to cycles_per_token. 24 lanes span the 24 inputs of w2 only.
    qm = tiny_qm(n_layers=2)
    p = decoder_params(qm, HardwareConfig(lanes=lanes))
    dut = Decoder(params=p)
    Fragment.get(dut, None)             # it elaborates; only its figures are used
    assert dut.matrices.rows_per_cycle == 1
    mats = [lp[name] for lp in p["layers"] for name in ("qkv", "wo", "w13", "w2")] + [p["head"]]
    assert dut.matrices.banks == len(mats) == 9
    assert dut.matrices.lanes == min(lanes, SHAPE["ffn_dim"])
    assert dut.matrices.bank_rows == tuple(len(mv["weights"]) for mv in mats)
    assert dut.matrices.bank_in_features == tuple(len(mv["weights"][0]) for mv in mats)
    alone = [requant_matvec(mv) for mv in mats]
    for unit in alone:
        Fragment.get(unit, None)        # (only their figures are used)
    assert [dut.matrices.bank_latency(b) for b in range(9)] == [u.latency for u in alone]
    for pos in (0, 5, qm.context - 1):
        work = dut.cycles_by_work(pos)
        assert sum(work.values()) == dut.cycles_per_token(pos)
        assert work["matrices"] == sum(u.latency for u in alone)
        assert work["attention"] == 2 * dut.layer.attention.cycles(pos)


@pytest.mark.parametrize(("lanes", "rows"), [(4, 2), (8, 3)])
def test_mac_array_rows(lanes, rows):
    # matrix_rows R: each product works on R rows at once, ceil(rows / R) * chunks cycles a
    # matrix; the tokens stay the golden model's and the measured cycles the model's.
    qm = tiny_qm(n_layers=2)
    dut = Decoder(params=decoder_params(qm, HardwareConfig(lanes=lanes, matrix_rows=rows)))
    one = Decoder(params=decoder_params(qm, HardwareConfig(lanes=lanes)))
    Fragment.get(one, None)             # (only its figures are used)
    mv, mv1 = dut.matrices, one.matrices
    assert mv.rows_per_cycle == rows and mv.bank_rows == mv1.bank_rows
    assert [mv.bank_cycles_per_vector(b) for b in range(mv.banks)] == [
        -(-mv1.bank_rows[b] // rows) * mv1.bank_chunks[b] for b in range(mv.banks)]
    assert dut.cycles_per_token(0) < one.cycles_per_token(0)
    r = run(dut, [([3, 11, 5], 4)])[0]
    assert r["tokens"] == golden(qm, [3, 11, 5], 4)
    measured = [b - a for a, b in zip(r["cycles"], r["cycles"][1:], strict=False)]
    assert measured == [dut.cycles_per_token(3 + k) for k in range(3)]


def test_max_new_zero_and_one(qm, decoder):
    r0, r1 = run(decoder, [([5, 6], 0), ([5, 6], 1)])
    assert r0["tokens"] == [] and not r0["busy"]
    assert r1["tokens"] == golden(qm, [5, 6], 1)


def test_context_full_in_generation(qm, decoder):
    ctx = decoder.context
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    r = run(decoder, [(prompt, 10)])[0]
    # Positions 10 and 11 remain: three tokens (the third is never fed back), then the flag.
    assert len(r["tokens"]) == ctx - len(prompt) + 1
    assert r["tokens"] == golden(qm, prompt, ctx - len(prompt) + 1)
    assert r["context_full"] and not r["ready"]
    # start clears it and a new sequence runs.
    r2 = run(decoder, [(prompt, 10), ([4], 2)])[1]
    assert r2["tokens"] == golden(qm, [4], 2) and not r2["context_full"]


def test_context_full_in_prompt(decoder):
    ctx = decoder.context
    r = run(decoder, [(list(range(ctx + 1)), 2)])[0]
    assert r["tokens"] == [] and r["context_full"] and not r["error"] and not r["ready"]


def test_bad_token_is_refused(qm, decoder):
    # The refused id halts the decoder: i.ready stays low until start.
    r, r2 = run(decoder, [([(3, False), (19, False)], 2), ([3, 4], 2)])
    assert r["tokens"] == [] and r["error"] and not r["ready"]
    assert r2["tokens"] == golden(qm, [3, 4], 2) and not r2["error"]


def test_eos_stops_generation(engine):
    qm = tiny_qm(engine=engine)
    prompt = [3, 7, 1]
    free = golden(qm, prompt, 6)
    eos = free[2]
    spec = dataclasses.replace(qm.spec, eos_id=eos)
    qm_eos = dataclasses.replace(qm, spec=spec)
    dut = build(engine, qm_eos)
    r = run(dut, [(prompt, 6)])[0]
    expected = golden(qm_eos, prompt, 6)
    assert r["tokens"] == expected and expected[-1] == eos and len(expected) <= 3


def test_two_layers_odd_lanes(engine):
    qm = tiny_qm(seed=5, engine=engine, n_layers=2, rope_pairing="interleaved")
    dut = build(engine, qm, lanes=5, context=8)
    assert dut.context == 8
    r = run(dut, [([9, 2], 4)])[0]
    assert r["tokens"] == golden(qm, [9, 2], 4)
    measured = [b - a for a, b in zip(r["cycles"], r["cycles"][1:], strict=False)]
    assert measured == [dut.cycles_per_token(2 + k) for k in range(3)]


def test_three_layers_fewer_vector_lanes():
    # Three layers through one shared datapath, and element-wise units narrower than the
    # matrices: tokens and every gap still exact.
    qm = tiny_qm(seed=6, n_layers=3)
    params = decoder_params(qm, HardwareConfig(lanes=4, vector_lanes=1, context=8))
    layer = params["layers"][0]
    assert layer["qkv"]["lanes"] == 4 and layer["attention"]["lanes"] == 4
    assert layer["attention"]["out_lanes"] == 1
    assert {params["norm"]["lanes"], params["embed"]["lanes"], params["argmax"]["lanes"],
            params["layers"][0]["swiglu"]["lanes"], params["layers"][0]["rope"]["lanes"]} == {1}
    # The residual adds have no multiplier: they keep the matrices' lanes.
    assert layer["residual"]["lanes"] == 4
    dut = Decoder(params=params)
    assert dut.n_layers == 3
    r = run(dut, [([3, 11], 4)])[0]
    assert r["tokens"] == golden(qm, [3, 11], 4)
    measured = [b - a for a, b in zip(r["cycles"], r["cycles"][1:], strict=False)]
    assert measured == [dut.cycles_per_token(2 + k) for k in range(3)]


def test_layers_with_different_weight_groups_share_one_datapath(engine):
    # A GGUF may store one projection as blocks in some layers and not in others, or with other
    # block sizes: the shared unit regroups them to a common size, exactly.
    shape = {**(SERIAL_SHAPE if engine == "serial" else SHAPE), "n_layers": 2}
    big, small = shape["dim"], shape["dim"] // 2        # 16 and 8 inputs per block (lanes)
    loaded = random_loaded(11, **shape)
    blocks = {"layers.0.wo": block_q8_0(loaded.weights["layers.0.wo"], big),
              "layers.1.wo": block_q8_0(loaded.weights["layers.1.wo"], small),
              "layers.1.w2": block_q8_0(loaded.weights["layers.1.w2"], small)}
    qm = quantize(random_loaded(11, block_quantized=blocks, **shape), weights="keep")
    assert qm.layers[0].w2.group_mult is None and qm.layers[1].w2.group_size == small
    dut = build(engine, qm)
    if engine == "lanes":
        assert dut.matrices.group_size == small
    r = run(dut, [([5, 12, 3], 5)])[0]
    assert r["tokens"] == golden(qm, [5, 12, 3], 5)


def _signed_blocks(seed, shape):
    # Q8_0-style blocks of dim/2 with every other block scale negative (GGUF Q4_0/Q5_0 style) on
    # the unfused matrices: negative group multipliers in the embedding and the matvecs.
    loaded = random_loaded(seed, **shape)
    blocks = {name: block_q8_0(loaded.weights[name], shape["dim"] // 2, signed_scales=True)
              for name in ("embed", "layers.0.wo", "layers.0.w2", "head")}
    qm = quantize(random_loaded(seed, block_quantized=blocks, **shape), weights="keep")
    assert (qm.embed.group_mult < 0).any() and (qm.head.group_mult < 0).any()
    return qm


# Each takes the model shape; groups are dim/2 inputs (8 for the lanes engine's shape).
FORMATS = {
    "int4_groups": lambda shape: quantize(random_loaded(7, **shape), weights="int4",
                                          group_size=shape["dim"] // 2),
    "ternary": lambda shape: quantize(random_loaded(8, **shape), weights="ternary"),
    "tied_int8": lambda shape: quantize(random_loaded(9, **shape, tied_embeddings=True),
                                        weights="int8"),
    "q8_0_signed_groups": lambda shape: _signed_blocks(10, shape),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_formats_match_golden(fmt, engine):
    shape = SERIAL_SHAPE if engine == "serial" else SHAPE
    qm = FORMATS[fmt](shape)
    if fmt == "int4_groups":
        q_dim = shape["n_heads"] * shape["head_dim"]
        assert qm.embed.group_size == shape["dim"] // 2
        assert qm.layers[0].wq.group_mult.shape == (q_dim, 2)
        assert abs(qm.layers[0].w1.values).max() <= 7
    if fmt == "ternary":
        assert set(qm.layers[0].w2.values.reshape(-1).tolist()) <= {-1, 0, 1}
    if fmt == "tied_int8":
        assert qm.spec.tied_embeddings
    dut = build(engine, qm)
    script = [([4, 17, 2], 5), ([13], 3)]
    for (prompt, n), r in zip(script, run(dut, script), strict=True):
        assert r["tokens"] == golden(qm, prompt, n), (fmt, prompt)
        assert not r["error"] and not r["context_full"] and not r["busy"]


@pytest.mark.parametrize("idle,stall,seed", [(0.5, 0.0, 1), (0.0, 0.7, 2), (0.4, 0.5, 3)])
def test_idle_and_backpressure(qm, decoder, idle, stall, seed):
    script = [([6, 1, 14], 5), ([2, 9], 3)]
    results = run(decoder, script, idle=idle, stall=stall, seed=seed)
    delay = late = 0
    for (prompt, n), r in zip(script, results, strict=True):
        assert r["tokens"] == golden(qm, prompt, n), prompt
        gaps = [b - a for a, b in zip(r["cycles"], r["cycles"][1:], strict=False)]
        free = [decoder.cycles_per_token(len(prompt) + k) for k in range(len(gaps))]
        # Stalls only ever delay a token: never faster than the free-running spacing.
        assert all(gap >= f for gap, f in zip(gaps, free, strict=True))
        delay += sum(gaps) - sum(free)
        taken = [b - a for a, b in zip(r["in_cycles"], r["in_cycles"][1:], strict=False)]
        late += sum(taken) - sum(decoder.cycles_per_prompt_token(k) for k in range(len(taken)))
    assert (delay > 0) == bool(stall) and (late > 0) == bool(idle)


def test_cycles_per_prompt_token(qm, decoder):
    prompt = [8, 3, 12, 0, 7, 5]
    r = run(decoder, [(prompt, 2)])[0]
    assert r["tokens"] == golden(qm, prompt, 2)
    measured = [b - a for a, b in zip(r["in_cycles"], r["in_cycles"][1:], strict=False)]
    # Token k (not the last) sits at position k; the next one is taken cycles_per_prompt_token(k)
    # edges later. The attention's cost grows with the position.
    assert measured == [decoder.cycles_per_prompt_token(k) for k in range(len(prompt) - 1)]
    assert decoder.cycles_per_prompt_token(5) > decoder.cycles_per_prompt_token(0)


def test_back_to_back_and_continuation(qm, decoder):
    # Sequence 2 begins with start right after sequence 1 ends; sequence 3 continues sequence 2
    # without start: its prompt begins with the final generated token (never fed back).
    first, second, extra = ([5, 16], 4), ([9, 3], 3), [11, 4]
    r1, r2 = run(decoder, [first, second])
    assert r1["tokens"] == golden(qm, *first) and r2["tokens"] == golden(qm, *second)
    # Sequence 2 began one edge after sequence 1's flags were sampled.
    assert r2["in_cycles"][0] - r1["cycles"][-1] <= 4
    cont = [r2["tokens"][-1], *extra]
    r3, r4 = run(decoder, [second, (cont, 3, {"start": False})])
    assert r3["tokens"] == r2["tokens"]
    assert r4["tokens"] == golden(qm, second[0] + r2["tokens"] + extra, 3)
    assert r4["tokens"] != golden(qm, cont, 3)       # the KV cache really carried over


def test_start_aborts_generation(qm, decoder):
    # start while token 3 waits on o: token 3 is dropped, the new sequence (whose prompt needs
    # no second start) is exact, and nothing of the aborted one comes out later.
    prompt, n = [10, 2, 6], 5
    r, r2 = run(decoder, [(prompt, n, {"interrupt": ("start", 2)}),
                          ([1, 15], 3, {"start": False})])
    assert r["tokens"] == golden(qm, prompt, n)[:2] and not r["valid_at_start"]
    assert not r["busy"] and r["ready"] and not r["error"] and not r["context_full"]
    assert r2["tokens"] == golden(qm, [1, 15], 3)


def test_start_abandons_a_partial_prompt(qm, decoder):
    # Two prompt tokens without last, then start: the new sequence begins at position 0.
    r, r2 = run(decoder, [([(5, False), (6, False)], 2), ([3, 8], 4)])
    assert r["tokens"] == [] and not r["busy"] and r["ready"]
    assert r2["tokens"] == golden(qm, [3, 8], 4)


def test_reset_mid_generation(qm, decoder):
    # The synchronous reset abandons the generation (tokens in flight included) and returns to
    # position 0: the next sequence needs no start and is exact.
    prompt, n = [12, 4, 4], 6
    r, r2 = run(decoder, [(prompt, n, {"interrupt": ("reset", 2)}),
                          ([3, 17], 4, {"start": False})])
    assert r["tokens"] == golden(qm, prompt, n)[:2]
    assert not r["busy"] and r["ready"] and not r["error"] and not r["context_full"]
    assert r2["tokens"] == golden(qm, [3, 17], 4)
