"""The whole decoder in the Amaranth simulator against the golden model, token for token."""

import dataclasses

import pytest
from amaranth.sim import Simulator
from quant_helpers import random_loaded

from hardwire.errors import ConfigError
from hardwire.gen.hardware import HardwareConfig, decoder_params
from hardwire.gen.quantize import quantize
from hardwire.hdl.decoder import Decoder
from hardwire.hdl.stream_sim import stream_check, watchdog
from hardwire.sim.golden import GoldenModel

SHAPE = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=24, vocab_size=19,
             max_seq_len=12)
LANES = 4


def tiny_qm(seed=3, **overrides):
    return quantize(random_loaded(seed, **{**SHAPE, **overrides}), weights="int8")


@pytest.fixture(scope="module")
def qm():
    return tiny_qm()


@pytest.fixture(scope="module")
def decoder(qm):
    return Decoder(params=decoder_params(qm, HardwareConfig(lanes=LANES)))


def run(dut, script, *, limit=30_000):
    """Run ``script``: a list of ``(prompt, max_new)`` sequences, each begun with ``start``; a
    prompt token may be an int or ``(token, last)``. Returns per sequence the emitted tokens,
    the cycles of their transfers and the status flags sampled after the sequence."""
    results = []

    async def bench(ctx):
        cycle = 0

        def tick():
            nonlocal cycle
            cycle += 1
            return ctx.tick()

        for prompt, max_new in script:
            ctx.set(dut.start, 1)
            await tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.max_new, max_new)
            items = [(t, k == len(prompt) - 1) if isinstance(t, int) else t
                     for k, t in enumerate(prompt)]
            for token, last in items:
                ctx.set(dut.i.payload, {"token": token, "last": int(last)})
                ctx.set(dut.i.valid, 1)
                while not (await tick().sample(dut.i.ready))[2]:
                    pass
                ctx.set(dut.i.valid, 0)
            out, cycles = [], []
            ctx.set(dut.o.ready, 1)
            while True:
                # Wait for busy to drop (the prompt has run) or a token.
                _, _, valid, payload, busy = await tick().sample(dut.o.valid, dut.o.payload,
                                                                 dut.busy)
                if valid:
                    out.append(payload.token)
                    cycles.append(cycle)
                    if payload.last:
                        break
                elif not busy:
                    break
            ctx.set(dut.o.ready, 0)
            await tick()
            results.append({"tokens": out, "cycles": cycles, "busy": ctx.get(dut.busy),
                            "error": ctx.get(dut.error),
                            "context_full": ctx.get(dut.context_full),
                            "ready": ctx.get(dut.i.ready)})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    async def check(ctx):
        await stream_check(ctx, dut.o)

    sim.add_process(check)
    sim.add_process(watchdog(limit))
    sim.run()
    return results


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


def test_eos_stops_generation():
    qm = tiny_qm()
    prompt = [3, 7, 1]
    free = golden(qm, prompt, 6)
    eos = free[2]
    spec = dataclasses.replace(qm.spec, eos_id=eos)
    qm_eos = dataclasses.replace(qm, spec=spec)
    dut = Decoder(params=decoder_params(qm_eos, HardwareConfig(lanes=LANES)))
    r = run(dut, [(prompt, 6)])[0]
    expected = golden(qm_eos, prompt, 6)
    assert r["tokens"] == expected and expected[-1] == eos and len(expected) <= 3


def test_two_layers_odd_lanes():
    qm = tiny_qm(seed=5, n_layers=2, rope_pairing="interleaved")
    dut = Decoder(params=decoder_params(qm, HardwareConfig(lanes=5, context=8)))
    assert dut.context == 8
    r = run(dut, [([9, 2], 4)])[0]
    assert r["tokens"] == golden(qm, [9, 2], 4)
    measured = [b - a for a, b in zip(r["cycles"], r["cycles"][1:], strict=False)]
    assert measured == [dut.cycles_per_token(2 + k) for k in range(3)]
