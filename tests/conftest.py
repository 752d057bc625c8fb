"""Shared pytest set-up: test helper modules in tests/ (e.g. model_factory) import by plain name."""

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def verilator_cache(tmp_path_factory):
    """Per-run build cache for :func:`hardwire.sim.verilator.build_verilator`, shared by the
    xdist workers of one run (their base temp folders sit in the run's own folder; builds take a
    file lock per design): a design is built once per test run and never reused across runs."""
    base = tmp_path_factory.getbasetemp()
    run_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = run_dir / "verilator-cache"
    cache.mkdir(exist_ok=True)
    return cache
