"""Hypothesis fuzzing of every reader: random byte edits, insertions, deletions, truncations and
planted huge integers in valid files. Each example loads a valid model or ends in our own
error naming the file, within the time and memory bounds of :func:`broken_models.guarded`.

Derandomized with a fixed budget, so ``make test`` runs the same examples every time.
"""

import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from broken_models import (
    FUZZ_EXAMPLES_PER_TARGET,
    FUZZ_TARGETS,
    TIME_LIMIT_S,
    TRACED_PEAK_LIMIT,
    guarded,
    seed_models,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardwire.errors import HardwireError
from hardwire.gen.frontends import load_model

BIG = (0, 1, 0x7F, 0xFF, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 40, 1 << 62, (1 << 64) - 1)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seed_models(tmp_path_factory.mktemp("fuzz-seeds"))


def _mutation(size):
    pos = st.one_of(st.integers(0, min(size, 256) - 1), st.integers(0, size - 1))
    return st.one_of(
        st.tuples(st.just("set"), pos, st.integers(0, 255)),
        st.tuples(st.just("xor"), pos, st.integers(1, 255)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("truncate"), pos, st.just(0)),
        st.tuples(st.just("u64"), pos, st.sampled_from(BIG)),
        st.tuples(st.just("u32"), pos, st.sampled_from([b & 0xFFFFFFFF for b in BIG])),
    )


def mutate(blob, mutations):
    """``blob`` with ``mutations`` (from :func:`_mutation`) applied in order."""
    data = bytearray(blob)
    for kind, pos, arg in mutations:
        pos = min(pos, max(len(data) - 1, 0))
        if kind == "set" and data:
            data[pos] = arg
        elif kind == "xor" and data:
            data[pos] ^= arg
        elif kind == "insert":
            data[pos:pos] = arg
        elif kind == "delete":
            del data[pos:pos + arg]
        elif kind == "truncate":
            del data[pos:]
        elif kind in ("u64", "u32"):
            fmt = "<Q" if kind == "u64" else "<I"
            data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, arg)
    return bytes(data)


@pytest.mark.parametrize(("front_end", "target"), FUZZ_TARGETS,
                         ids=[f"{f}-{t}" for f, t in FUZZ_TARGETS])
def test_mutated_files_load_or_fail_cleanly(front_end, target, seeds):
    seed = seeds[front_end]
    folder = seed if seed.is_dir() else seed.parent
    blob = (folder / target).read_bytes()
    ran = []

    @settings(max_examples=FUZZ_EXAMPLES_PER_TARGET, derandomize=True, database=None,
              deadline=None, suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.lists(_mutation(len(blob)), min_size=1, max_size=4))
    def check(mutations):
        ran.append(mutations)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / folder.name
            shutil.copytree(folder, copy)
            (copy / target).write_bytes(mutate(blob, mutations))
            outcome = guarded(load_model, copy if seed.is_dir() else copy / seed.name)
        assert outcome.seconds < TIME_LIMIT_S and outcome.peak < TRACED_PEAK_LIMIT, \
            (outcome.seconds, outcome.peak)
        if outcome.error is not None:
            assert isinstance(outcome.error, HardwireError), repr(outcome.error)
            assert str(copy) in str(outcome.error), str(outcome.error)

    check()
    assert len(ran) >= FUZZ_EXAMPLES_PER_TARGET
