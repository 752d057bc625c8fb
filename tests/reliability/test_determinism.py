"""The same inputs give byte-identical Verilog, ROM files and manifest across processes, hash
seeds and working directories.

``tests/gen/test_compile.py`` compiles twice inside one process; this runs the command line in
two fresh processes with different ``PYTHONHASHSEED`` s, each in its own working directory with
its own copy of the model, so set iteration order, absolute paths and process state cannot leak
into the output.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from broken_models import seed_models

TIMEOUT_S = 300


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return seed_models(tmp_path_factory.mktemp("seeds"))["huggingface"]


def test_compile_is_byte_identical_across_processes(model, tmp_path):
    runs = []
    for k, hash_seed in enumerate(("1", "2")):
        cwd = tmp_path / f"run{k}" / ("deeper" * k)
        cwd.mkdir(parents=True)
        shutil.copytree(model, cwd / "model")
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        argv = [sys.executable, "-m", "hardwire", "compile", "model", "--lanes", "4",
                "--rom-style", "files", "--out", "out"]
        runs.append((cwd, subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)))
    digests = []
    for cwd, proc in runs:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, output
        digests.append(_digests(cwd / "out"))
    first, second = digests
    assert first == second
    names = set(first)
    assert {"hardwire_top.v", "manifest.json"} <= names
    assert any(n.endswith(".mem") for n in names), names
    for cwd, _ in runs:
        for name in names:
            assert str(cwd).encode() not in (cwd / "out" / name).read_bytes(), name
