"""Tool scaling: compile time, Verilator build time, time to the first generated token,
simulation speed and peak memory against parameter count.

Each size runs in its own process (``python -m hardwire.benchmarks.scaling SIZE LANES DIR``), so
its peak memory is its own (the larger of the Python process and its biggest child: Verilator,
the C++ compiler, the simulator) and a size that overruns the time budget can be stopped with
everything it measured so far kept. The ladder stops at the first size that does not finish.
"""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["SIZES", "LADDER", "measure_size", "scaling"]

# Llama shapes from the bundled model's size up to the llama2.c stories15M shape ("tiny" is
# the tests' smoke size, not part of the default ladder).
SIZES = {
    "tiny": dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=32,
                 vocab_size=19, max_seq_len=24),
    "0.2M": dict(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=192,
                 vocab_size=96, max_seq_len=128),
    "1M": dict(dim=128, n_layers=5, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=384,
               vocab_size=256, max_seq_len=256),
    "4M": dict(dim=256, n_layers=5, n_heads=8, n_kv_heads=4, head_dim=32, ffn_dim=768,
               vocab_size=512, max_seq_len=256),
    "15M": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, head_dim=48, ffn_dim=768,
                vocab_size=32000, max_seq_len=256, tied_embeddings=True),
}
PROMPT = [1, 2]


def _peak_bytes():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return 1024 * max(own, children)


def _emit(**fields):
    print("SCALING " + json.dumps(fields), flush=True)


def _run_one(size, lanes, weights, work, shape):
    """In the child process: every phase prints one ``SCALING {json}`` line as it ends; a model
    the quantizer or compiler refuses (a bound of :mod:`hardwire.gen.hardware`) prints a
    ``refused`` one."""
    from ..errors import ConfigError
    from ..gen.compile import CompileOptions, compile_model
    from ..gen.quantize import quantize
    from ..gen.synthetic import random_model, random_spec
    from ..sim.decoder_run import build_design, generate
    from ..sim.golden import GoldenModel

    work = Path(work)
    start = time.monotonic()
    loaded = random_model(random_spec(name=f"random-{size}", **shape), seed=1)
    try:
        qm = quantize(loaded, weights=weights)
        _emit(phase="quantize", seconds=time.monotonic() - start, params=loaded.spec.n_params,
              rom_bits=sum(qm.rom_bits().values()))
        options = CompileOptions(weights=weights, lanes=lanes)
        start = time.monotonic()
        decoder, manifest = compile_model(qm, options, work / "rtl", source_hash="")
    except ConfigError as exc:
        _emit(phase="refused", reason=str(exc))
        return
    _emit(phase="compile", seconds=time.monotonic() - start,
          verilog_bytes=manifest["files"]["verilog_bytes"],
          rom_files=len(manifest["files"]["rom_files"]),
          peak_bytes=_peak_bytes())
    design = build_design(qm, options, work / "rtl", work / "verilator",
                          verilog=(decoder, manifest))
    _emit(phase="build", seconds=design.build_s, peak_bytes=_peak_bytes())
    run = generate(design, [PROMPT], 2, work / "run")
    seq = run.sequences[0]
    exact = seq["tokens"] == GoldenModel(qm).generate(PROMPT, 2)
    _emit(phase="first_token", seconds=run.seconds, first_token_cycle=seq["cycles"][0],
          cycles=run.cycles, cycles_per_s=run.cycles / run.seconds,
          measured_cycles_per_token=seq["cycles"][1] - seq["cycles"][0],
          estimated_cycles_per_token=decoder.cycles_per_token(len(PROMPT)),
          token_exact=exact, peak_bytes=_peak_bytes())


def measure_size(size, lanes, work, *, weights="int8", timeout_s=900, on_phase=None,
                 shape=None):
    """Measure one entry of :data:`SIZES` (or a model of ``shape``, :class:`ModelSpec` fields,
    named ``size``) in a child process; returns a dict with every phase that finished,
    ``finished`` and, when it did not, ``stopped`` (the reason: over the budget, refused by the
    quantizer or compiler, or the end of the child's output when it failed)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    argv = [sys.executable, "-m", "hardwire.benchmarks.scaling", size, str(lanes), weights,
            str(work), json.dumps(SIZES[size] if shape is None else shape)]
    record = {"size": size, "lanes": lanes, "weights": weights, "phases": {}}
    start = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as child:
        tail = []
        try:
            for line in child.stdout:
                if line.startswith("SCALING "):
                    fields = json.loads(line[len("SCALING "):])
                    phase = fields.pop("phase")
                    if phase == "refused":
                        record["stopped"] = f"refused: {fields['reason']}"
                        continue
                    record["phases"][phase] = fields
                    if on_phase:
                        on_phase(size, record)
                else:
                    tail = (tail + [line])[-20:]
                if time.monotonic() - start > timeout_s:
                    child.kill()
                    record["stopped"] = f"over the {timeout_s} s budget"
                    break
            child.wait(timeout=max(1, timeout_s - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            child.kill()
            record["stopped"] = f"over the {timeout_s} s budget"
        if child.returncode and "stopped" not in record:
            record["stopped"] = "failed: " + "".join(tail)[-1500:]
    record["wall_s"] = time.monotonic() - start
    record["finished"] = "first_token" in record["phases"]
    phases = record["phases"]
    if record["finished"]:
        record["params"] = phases["quantize"]["params"]
        record["to_first_token_s"] = sum(phases[p]["seconds"] for p in
                                         ("quantize", "compile", "build", "first_token"))
        record["peak_bytes"] = max(p.get("peak_bytes", 0) for p in phases.values())
    return record


LADDER = ("0.2M", "1M", "4M", "15M")


def scaling(work, *, sizes=LADDER, lanes=16, weights="int8", timeout_s=900,
            on_phase=None):
    """:func:`measure_size` for each size in order until one does not finish."""
    results = []
    for size in sizes:
        record = measure_size(size, lanes, Path(work) / size, weights=weights,
                              timeout_s=timeout_s, on_phase=on_phase)
        results.append(record)
        if not record["finished"]:
            break
    return results


if __name__ == "__main__":
    _run_one(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
