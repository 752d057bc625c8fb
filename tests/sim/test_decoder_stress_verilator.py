# amaranth: UnusedElaboratable=no
"""The compiled decoder under stress on Verilator (bench: :mod:`hardwire.sim.bench_decoder_stress`).

Each test sends a list of sequences with random idle and backpressure, resets and restarts at
chosen cycles, out-of-vocabulary ids, prompts that fill or overflow the context and the
``max_new`` limits, and compares every recorded transfer and status change with
:class:`Protocol`: the ``Decoder`` docstring's protocol on top of the golden model. No token may
be lost, duplicated or invented; every cycle gap that the docstring's timing formulas fix is
checked exactly (pauses only add waiting, never change the pipeline).

The fast tests share one build of a tiny random model (context 16, ``eos_id`` 17; the build
takes ~50 s on two busy cores, the nine bench runs ~2.5 s each). The long run (``slow``, 60
sequences, ~450 tokens, 3.1 M cycles in ~45 s) uses kjv-micro at int8 and 8 lanes, the design of
``test_decoder_verilator.py::test_kjv_micro_int8``, so the two share one build.
"""

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from quant_helpers import random_loaded

from hardwire.gen.compile import CompileOptions
from hardwire.gen.frontends import load_model
from hardwire.gen.quantize import quantize
from hardwire.sim import golden_ops
from hardwire.sim.decoder_run import build_design
from hardwire.sim.golden import GoldenModel
from hardwire.sim.verilator import run_bench

BENCH = "hardwire.sim.bench_decoder_stress"
TOKEN_BITS = 16
MAX_NEW = 2 ** 16 - 1
WATCH = 12
TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=32, vocab_size=19,
            max_seq_len=24, eos_id=17)
TINY_CONTEXT = 16
PAUSES = (None, 0.3, 0.7)


@dataclass
class Design:
    qm: object
    decoder: object
    model: object


def build(qm, options, cache, work):
    design = build_design(qm, options, work, cache)
    return Design(qm, design.decoder, design.model)


@pytest.fixture(scope="module")
def tiny(verilator_cache, tmp_path_factory):
    # Seed 11 generates token 17 in about one sequence out of six: eos stops happen, but not
    # in every sequence.
    qm = quantize(random_loaded(11, **TINY), weights="int8")
    return build(qm, CompileOptions(lanes=4, context=TINY_CONTEXT), verilator_cache,
                 tmp_path_factory.mktemp("stress-tiny"))


@dataclass
class Expected:
    """What the decoder must do with one sequence if nothing interrupts it."""
    start_pos: int
    taken: int = 0                  # prompt tokens taken off ``i`` (a discarded one included)
    ran: int = 0                    # of those, the ones that ran through the pipeline
    tokens: list = field(default_factory=list)        # (token, last)
    feed_pos: list = field(default_factory=list)      # position each emitted token is fed back at
    error: bool = False
    full: bool = False


class Protocol:
    """The ``Decoder`` docstring's protocol on top of :class:`GoldenModel`'s ``step``: the KV
    history carries over between sequences without ``start``, ``error``/``context_full`` halt."""

    def __init__(self, qm, context):
        self.golden = GoldenModel(qm)
        self.vocab, self.eos, self.context = qm.spec.vocab_size, qm.spec.eos_id, context
        self.restart()

    def restart(self):
        self.golden.reset()
        self.pos, self.logits, self.error, self.full = 0, None, False, False

    def run(self, prompt, max_new):
        e = Expected(start_pos=self.pos)
        for k, token in enumerate(prompt):
            if self.error or self.full:
                return e
            e.taken += 1
            if token >= self.vocab:
                self.error = e.error = True
            elif self.pos == self.context:
                self.full = e.full = True
            else:
                self.logits = self.golden.step(token)
                self.pos += 1
                e.ran += 1
                if k == len(prompt) - 1 and max_new:
                    self._generate(e, max_new)
        return e

    def _generate(self, e, left):
        while True:
            token = golden_ops.argmax(self.logits)
            eos, full_next = token == self.eos, self.pos == self.context
            ends = left == 1 or eos or full_next
            e.tokens.append((token, int(ends)))
            if ends:
                if full_next and left != 1 and not eos:
                    self.full = e.full = True
                return
            e.feed_pos.append(self.pos)
            self.logits = self.golden.step(token)
            self.pos += 1
            left -= 1


def pause_spec(rng, probability):
    return None if probability is None else {"probability": probability,
                                              "seed": rng.randrange(2 ** 31)}


def sequence(rng, prompt, max_new, *, start=True, event=None, idle=None, stall=None):
    return {"prompt": list(prompt), "max_new": max_new, "start": start, "event": event,
            "idle": pause_spec(rng, idle), "stall": pause_spec(rng, stall)}


def lower_bound(decoder, e):
    """Fewest cycles from a sequence's first cycle to its last transfer (no pauses)."""
    prompt = sum(decoder.cycles_per_prompt_token(e.start_pos + k) for k in range(e.ran - 1))
    return 1 + prompt + sum(decoder.cycles_per_token(e.start_pos + e.ran - 1 + k)
                            for k in range(len(e.tokens)))


def random_scenario(design, seed, n_sequences, *, max_prompt=6, max_new=10):
    """``n_sequences`` random sequences mixing every feature the bench drives, with random
    pauses; the choices (events within a sequence's expected length, continuations only where
    the decoder is not halted) come from a :class:`Protocol` run alongside."""
    rng = random.Random(seed)
    dec, vocab = design.decoder, design.decoder.vocab
    ref = Protocol(design.qm, dec.context)
    gap = min(dec.cycles_per_token(0), dec.cycles_per_prompt_token(0))
    seqs, can_continue = [], False
    kinds = ["plain", "plain", "continue", "continue", "zero", "fill", "overlong", "oov", "max",
             "rst_cycle", "rst_token", "start_cycle", "start_token"]
    while len(seqs) < n_sequences:
        kind = rng.choice(kinds)
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, max_prompt))]
        n, start, event = rng.randint(1, max_new), True, None
        if kind == "continue":
            if not can_continue:
                continue
            start, ids, n = False, ids[:2], min(n, 3)
        elif kind == "zero":
            n = 0
        elif kind == "fill":
            ids = [rng.randrange(vocab) for _ in range(dec.context)]
        elif kind == "overlong":
            ids = [rng.randrange(vocab) for _ in range(dec.context + rng.randint(1, 3))]
        elif kind == "oov":
            ids[rng.randrange(len(ids))] = rng.randrange(vocab, 2 ** TOKEN_BITS)
        elif kind == "max":
            n = MAX_NEW
        if start:
            ref.restart()
        e = ref.run(ids, n)
        if kind.endswith("_cycle"):
            event = {"action": kind[:-6], "at_cycle": rng.randrange(1, lower_bound(dec, e))}
        elif kind.endswith("_token"):
            if len(e.tokens) < 2:
                continue
            event = {"action": kind[:-6], "after_tokens": rng.randrange(1, len(e.tokens)),
                     "delay": rng.randrange(gap)}
        seqs.append(sequence(rng, ids, n, start=start, event=event,
                             idle=rng.choice(PAUSES), stall=rng.choice(PAUSES)))
        if event:
            ref.restart()
        can_continue = not (ref.error or ref.full) and ref.pos < dec.context - 4
    return seqs


def simulate(design, seqs, work, max_cycles=None):
    dec = design.decoder
    if max_cycles is None:
        max_cycles = 40 * dec.cycles_per_token(dec.context - 1) * (dec.context + 4)
    return run_bench(design.model, module=BENCH, work_dir=work, params={
        "token_bits": TOKEN_BITS, "max_cycles": max_cycles, "watch": WATCH,
        "sequences": seqs})


def _flag_at(flags, cycle):
    """``(busy, error, context_full, i.ready)`` in ``cycle`` from the change log."""
    now = None
    for entry in flags:
        if entry[0] > cycle:
            break
        now = tuple(entry[1:])
    return now


def _rose(flags, index, after):
    """The first cycle after ``after`` with flag ``index`` high."""
    return next((entry[0] for entry in flags if entry[index] and entry[0] > after), None)


def check(design, seqs, result):
    """Compare a bench result with :class:`Protocol`; returns counts of what was checked."""
    dec = design.decoder
    ref = Protocol(design.qm, dec.context)
    golden = GoldenModel(design.qm)
    counts = Counter()
    assert result["violations"] == []
    assert result["extra_outputs"] == []
    after_abort = False
    for n, (seq, r) in enumerate(zip(seqs, result["sequences"], strict=True)):
        where = f"sequence {n} {seq}"
        if after_abort:
            assert _flag_at(r["flags"], r["begin"])[:3] == (0, 0, 0), where
        if seq["start"]:
            ref.restart()
        e = ref.run(seq["prompt"], seq["max_new"])
        outs = [(t, last) for t, last, _, _ in r["outputs"]]
        ins = [c for c, _ in r["inputs"]]
        counts["sequences"] += 1
        counts["tokens"] += len(outs)
        event = seq["event"]
        if event is not None:
            # Interrupted: a prefix of what it would have done, then position 0 again.
            assert r["event_cycle"] is not None, f"{where}: the event never fired"
            assert len(ins) <= e.taken and outs == e.tokens[:len(outs)], where
            if len(ins) < len(seq["prompt"]):
                assert outs == [], where
            if "after_tokens" in event:
                assert len(outs) == event["after_tokens"], where
            if r["dropped"] is not None:
                # The token waiting on o was the right one, and it never came out.
                assert (r["dropped"] % 2 ** TOKEN_BITS, r["dropped"] >> TOKEN_BITS) == \
                    e.tokens[len(outs)], where
                counts["tokens dropped by an abort"] += 1
            counts[f"{event['action']} events"] += 1
            counts[f"{event['action']} events during generation"] += bool(
                len(ins) == len(seq["prompt"]) and r["event_cycle"] > ins[-1] + 1
                and len(outs) < len(e.tokens))
            ref.restart()
            after_abort = True
            continue
        after_abort = False
        assert r["event_cycle"] is None
        assert len(ins) == e.taken, where
        assert outs == e.tokens, where
        end = _flag_at(r["flags"], r["end"])
        assert end[:3] == (0, int(e.error), int(e.full)), where
        if e.start_pos == 0 and e.ran == len(seq["prompt"]) and outs:
            assert [t for t, _ in outs] == golden.generate(seq["prompt"], len(outs)), where
        # Status: each flag rises the cycle after the transfer that raised it.
        # (In a start cycle the flags still show the sequence before.)
        after = r["begin"] if seq["start"] else r["begin"] - 1
        if e.error:
            assert _rose(r["flags"], 2, after) == ins[-1] + 1, where
            counts["error halts"] += 1
        if e.full:
            cause = ins[-1] if e.taken > e.ran else r["outputs"][-1][3]
            assert _rose(r["flags"], 3, after) == cause + 1, where
            counts["context_full halts"] += 1
        if not (e.error or e.full):
            assert _rose(r["flags"], 2, after) is None, where
            assert _rose(r["flags"], 3, after) is None, where
        if outs and outs[-1][0] == ref.eos and len(outs) < seq["max_new"]:
            counts["eos stops"] += 1
        counts["max_new 0"] += seq["max_new"] == 0
        counts["continuations"] += not seq["start"]
        # Timing fixed by the docstring: the pause patterns only ever add waiting.
        for k in range(min(e.ran, len(ins) - 1)):
            assert r["inputs"][k + 1][1] - ins[k] == dec.cycles_per_prompt_token(
                e.start_pos + k), f"{where}: prompt token {k + 1}"
        if outs:
            first = r["outputs"][0][2] - ins[-1]
            assert first == dec.cycles_per_token(e.start_pos + e.ran - 1), where
            for k, pos in enumerate(e.feed_pos):
                gap = r["outputs"][k + 1][2] - r["outputs"][k][3]
                assert gap == dec.cycles_per_token(pos), f"{where}: token {k + 1}"
        counts["waiting cycles"] += sum(c - v for _, _, v, c in r["outputs"])
        counts["idle cycles"] += sum(c - s for c, s in r["inputs"][1:])
    return counts


def run_and_check(design, seqs, work):
    counts = check(design, seqs, simulate(design, seqs, work))
    print(dict(counts))
    return counts


def test_limits(tiny, tmp_path):
    """max_new 0 and 65535, a prompt filling the context exactly and one overflowing it, an id
    outside the vocabulary (mid-prompt and as the last token): each followed by an exact one."""
    rng, ctx, dec = random.Random(1), TINY_CONTEXT, tiny.decoder
    fill = [rng.randrange(dec.vocab) for _ in range(ctx + 3)]
    seqs = [
        sequence(rng, [3, 9], 0),                       # fills the cache, no output
        sequence(rng, [4, 1], 5, start=False),          # continues it
        sequence(rng, [0], MAX_NEW),                    # runs to the context
        sequence(rng, [3, 9, 4, 1], MAX_NEW, idle=0.5, stall=0.5),
        sequence(rng, [6], MAX_NEW),                    # stops at eos after 10 tokens
        sequence(rng, [8, 1], 3),
        sequence(rng, fill[:ctx], 1),                   # exactly fills: one token, no flag
        sequence(rng, [0], 2, start=False),             # no room: discarded, context_full
        sequence(rng, fill[:ctx], 4, stall=0.5),        # one token with last, context_full
        sequence(rng, fill, 4, idle=0.3),               # overflows: the 17th is discarded
        sequence(rng, [5, 40000, 7], 4),                # out of vocabulary mid-prompt
        sequence(rng, [5, 7, 19], 4),                   # ... and as the last token
        sequence(rng, [65535], 4, idle=0.5),
        sequence(rng, [12, 7], 6),
    ]
    counts = run_and_check(tiny, seqs, tmp_path)
    assert counts["error halts"] == 3 and counts["context_full halts"] == 5
    assert counts["max_new 0"] == 1 and counts["continuations"] == 2 and counts["eos stops"] == 1


def test_eos_stops(tiny, tmp_path):
    """Prompts whose greedy continuation reaches eos_id (17) within 10 tokens."""
    ref = Protocol(tiny.qm, TINY_CONTEXT)
    rng, prompts = random.Random(2), []
    while len(prompts) < 4:
        prompt = [rng.randrange(tiny.decoder.vocab) for _ in range(rng.randint(1, 4))]
        ref.restart()
        tokens = ref.run(prompt, 10).tokens
        if tokens and tokens[-1][0] == ref.eos and len(tokens) < 10:
            prompts.append(prompt)
    seqs = [sequence(rng, p, 10, idle=0.3, stall=0.6) for p in prompts]
    assert run_and_check(tiny, seqs, tmp_path)["eos stops"] == 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resets_at_random_cycles(tiny, tmp_path, seed):
    """rst at a random cycle of each sequence (prompt or generation), then an exact sequence,
    half of them without start."""
    rng, dec = random.Random(seed), tiny.decoder
    ref, seqs = Protocol(tiny.qm, TINY_CONTEXT), []
    for _ in range(4):
        prompt = [rng.randrange(dec.vocab) for _ in range(rng.randint(1, 5))]
        ref.restart()
        e = ref.run(prompt, 8)
        event = {"action": "rst", "at_cycle": rng.randrange(1, lower_bound(dec, e))}
        seqs.append(sequence(rng, prompt, 8, event=event, idle=0.3, stall=0.5))
        seqs.append(sequence(rng, [rng.randrange(dec.vocab) for _ in range(3)], 5,
                             start=rng.random() < 0.5, idle=0.3, stall=0.5))
    assert run_and_check(tiny, seqs, tmp_path)["rst events"] == 4


def test_start_and_reset_mid_generation(tiny, tmp_path):
    """start and rst after k tokens, while the next token waits on o (backpressure) or sits in
    the pipeline: it is dropped; start also aborts a partial prompt and a halt."""
    rng = random.Random(4)
    # Long enough for the next token to come out and wait on o (held not ready).
    late = tiny.decoder.cycles_per_token(TINY_CONTEXT - 1) + 5
    seqs = [
        sequence(rng, [1, 5, 9], 8, event={"action": "start", "after_tokens": 2, "delay": 5}),
        sequence(rng, [2, 3], 6, start=False, stall=0.5,
                 event={"action": "start", "after_tokens": 3, "delay": late, "hold": True}),
        sequence(rng, [7, 1, 4], 5, start=False),
        sequence(rng, [11, 6], 8, stall=0.5,
                 event={"action": "rst", "after_tokens": 1, "delay": late, "hold": True}),
        sequence(rng, [14], 4, start=False),
        sequence(rng, [3, 3, 3, 3, 3], 4, event={"action": "start", "at_cycle": 900}),
        sequence(rng, [9, 40], 4, start=False, idle=0.5),
        sequence(rng, [9, 400, 2], 4),
        sequence(rng, [10], 3),
    ]
    counts = run_and_check(tiny, seqs, tmp_path)
    assert counts["start events during generation"] == 2
    assert counts["rst events during generation"] == 1
    assert counts["tokens dropped by an abort"] == 2


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_mix(tiny, tmp_path, seed):
    """Twelve sequences back to back, every feature mixed at random, random pauses."""
    counts = run_and_check(tiny, random_scenario(tiny, seed, 12, max_prompt=4, max_new=6),
                           tmp_path)
    assert counts["sequences"] == 12 and counts["tokens"] > 0


@pytest.mark.slow
def test_kjv_micro_long_run(verilator_cache, tmp_path):
    """Several hundred tokens across many sequences on kjv-micro (int8, 8 lanes; the design of
    test_decoder_verilator.py::test_kjv_micro_int8), with pauses, resets and restarts."""
    qm = quantize(load_model("kjv-micro"), weights="int8")
    design = build(qm, CompileOptions(lanes=8), verilator_cache, tmp_path / "rtl")
    seqs = random_scenario(design, 21, 60, max_prompt=12, max_new=30)
    counts = run_and_check(design, seqs, tmp_path / "run")
    assert counts["tokens"] >= 400
