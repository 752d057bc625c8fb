"""Every broken model file of the corpus ends in our own error, fast and without a memory
blow-up; the command line answers it with exit code 2 and writes nothing."""

import collections
import re
from pathlib import Path

import pytest
from broken_models import (
    FRONT_ENDS,
    FUZZ_EXAMPLES_PER_TARGET,
    FUZZ_TARGETS,
    TIME_LIMIT_S,
    TRACED_PEAK_LIMIT,
    corpus,
    fresh_copy,
    guarded,
    seed_models,
)

from hardwire.cli import main
from hardwire.errors import HardwireError
from hardwire.gen.frontends import load_model

# Lower bounds on the corpus (docs/reliability.md quotes the measured counts).
MIN_CASES = {"huggingface": 150, "gguf": 70, "llama2c": 100, "native": 90, "safetensors": 4}
KINDS = {"truncated", "flipped", "wrong-dtype", "mismatched-shape", "missing-tensor", "nan-inf",
         "absurd-dims", "unsupported-quant", "huge-size"}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seed_models(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def cases(seeds):
    return corpus(seeds)


def test_seeds_load(seeds):
    for front_end, path in seeds.items():
        if front_end != "safetensors":
            assert guarded(load_model, path).error is None, front_end


def test_corpus_covers_every_kind(cases):
    counts = collections.Counter(c.front_end for c in cases)
    for front_end in FRONT_ENDS:
        assert counts[front_end] >= MIN_CASES[front_end], (front_end, counts)
    for front_end in ("huggingface", "gguf", "llama2c", "native"):
        kinds = {c.kind for c in cases if c.front_end == front_end}
        assert kinds == KINDS, (front_end, KINDS - kinds)
    assert len({c.id for c in cases}) == len(cases)


def test_documented_counts(cases):
    """docs/reliability.md never claims more cases than the tests generate."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    documented = int(re.search(r"a corpus of \*\*(\d+)\*\* broken files", text).group(1))
    assert 0 < documented <= len(cases)
    fuzzed = int(re.search(r"\*\*(\d+)\*\* fuzz examples", text).group(1))
    assert 0 < fuzzed <= len(FUZZ_TARGETS) * FUZZ_EXAMPLES_PER_TARGET
    counts = collections.Counter(c.front_end for c in cases)
    row = re.search(r"\| \*\*total\*\* \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text)
    assert [int(n) for n in row.groups()] == [counts[f] for f in FRONT_ENDS]


def _judge(case, outcome, folder):
    """A list of what is wrong with ``outcome`` (empty: the case passed)."""
    problems = []
    if outcome.seconds > TIME_LIMIT_S or outcome.peak > TRACED_PEAK_LIMIT:
        problems.append(f"took {outcome.seconds:.1f} s, traced peak {outcome.peak >> 20} MiB")
    e = outcome.error
    if e is None:
        if case.always_error:
            problems.append("loaded without an error")
        return problems
    if not isinstance(e, HardwireError):
        return problems + [f"{type(e).__name__}: {e}"]
    text = str(e)
    if str(folder) not in text:
        problems.append(f"message does not name the file: {text}")
    if case.needle is not None and case.needle not in text:
        problems.append(f"message does not mention {case.needle!r}: {text}")
    if "MemoryError" in text or "\n\n" in text:
        problems.append(f"message is not one paragraph about the file: {text}")
    return problems


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_every_broken_file_is_refused(front_end, seeds, cases, tmp_path):
    failures, outcomes = [], collections.Counter()
    mine = [c for c in cases if c.front_end == front_end]
    for k, case in enumerate(mine):
        where = tmp_path / str(k)
        where.mkdir()
        path = fresh_copy(seeds, front_end, where)
        case.damage(path)
        outcome = guarded(load_model, path)
        outcomes["error" if outcome.error is not None else "valid"] += 1
        problems = _judge(case, outcome, path if path.is_dir() else path.parent)
        if problems:
            failures.append(f"{case.id}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert outcomes["error"] >= sum(c.always_error for c in mine)


@pytest.mark.parametrize("front_end", ("huggingface", "gguf", "llama2c", "native"))
def test_command_line_exits_2_and_writes_nothing(front_end, seeds, cases, tmp_path, capsys):
    sample = [c for c in cases if c.front_end == front_end and c.always_error][::12]
    assert len(sample) >= 6
    for k, case in enumerate(sample):
        where = tmp_path / str(k)
        where.mkdir()
        path = fresh_copy(seeds, front_end, where)
        case.damage(path)
        out = where / "out"
        for argv in (["inspect", str(path)], ["compile", str(path), "--out", str(out)]):
            assert main(argv) == 2, (case.id, argv)
            err = capsys.readouterr().err
            assert err.startswith(f"hardwire {argv[0]}: error: "), (case.id, err)
            assert "Traceback" not in err, (case.id, err)
        assert not out.exists(), case.id
