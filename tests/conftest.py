"""Shared pytest set-up: test helper modules in tests/ (e.g. model_factory) import by plain name."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def verilator_cache(tmp_path_factory):
    """Per-run build cache for :func:`hardwire.sim.verilator.build_verilator` (one per xdist
    worker): a design is built once per test run and never reused from the repository."""
    return tmp_path_factory.mktemp("verilator")
