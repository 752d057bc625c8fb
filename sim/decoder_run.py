"""A compiled decoder on Verilator, from Python: compile + build once, then generate.

The one path from a :class:`~hardwire.gen.quantized_model.QuantizedModel` to simulated tokens,
used by ``hardwire verify`` and the benchmarks::

    design = build_design(qm, CompileOptions(lanes=16), out_dir, cache_dir)
    run = generate(design, [[1, 2, 3]], 32, work_dir)
    run.sequences[0]["tokens"], run.seconds, run.cycles
"""

import time
from dataclasses import dataclass
from pathlib import Path

from .verilator import VerilatorModel, build_verilator, run_bench

__all__ = ["Design", "Generation", "build_design", "generate", "cycle_limit", "BENCH"]

BENCH = "hardwire.sim.bench_decoder"


@dataclass(frozen=True)
class Design:
    """A compiled and built decoder: the elaborated ``decoder``, its ``manifest``, the Verilator
    ``model`` and the seconds the compile and the build took (0 for a cached build)."""
    decoder: object
    manifest: dict
    model: VerilatorModel
    compile_s: float
    build_s: float


@dataclass(frozen=True)
class Generation:
    """What one bench run produced: per sequence ``tokens``, ``cycles`` (of each output transfer),
    ``prompt_cycles`` and status flags (see :mod:`hardwire.sim.bench_decoder`); ``cycles`` simulated
    in all and wall-clock ``seconds`` of the run (simulator start-up included)."""
    sequences: list
    cycles: int
    seconds: float


def build_design(qm, options, out_dir, cache_dir, *, source_hash="", build_args=(),
                 verilog=None):
    """Compile ``qm`` with ``options`` into ``out_dir`` (Verilog, ROM files, manifest) and build
    it with Verilator in ``cache_dir``. ``verilog``: an already compiled ``(decoder, manifest)``
    in ``out_dir`` to build instead of compiling again."""
    from ..gen.compile import TOP, compile_model
    out_dir = Path(out_dir)
    start = time.monotonic()
    decoder, manifest = verilog or compile_model(qm, options, out_dir, source_hash=source_hash)
    compile_s = 0.0 if verilog else time.monotonic() - start
    model = build_verilator((out_dir / f"{TOP}.v").read_text(), toplevel=TOP,
                            cache_dir=cache_dir, build_args=build_args, data_files=[
                                out_dir / rom["name"] for rom in manifest["files"]["rom_files"]])
    return Design(decoder, manifest, model, compile_s, model.seconds)


def cycle_limit(decoder, prompts, n_new):
    """A generous bound on the cycles one sequence may take: four times the worst case."""
    per_token = max(decoder.cycles_per_token(p) for p in range(decoder.context))
    per_prompt = max(decoder.cycles_per_prompt_token(p) for p in range(decoder.context))
    return 4 * (per_prompt * max(map(len, prompts)) + per_token * (n_new + 1)) + 1000


def generate(design, prompts, n_new, work_dir):
    """Run every prompt of ``prompts`` (lists of token ids) as a new sequence with ``max_new =
    n_new`` on the built design; returns a :class:`Generation`. Raises
    :class:`~hardwire.sim.verilator.BenchFailure` when the bench fails or a sequence overruns
    :func:`cycle_limit`."""
    decoder = design.decoder
    start = time.monotonic()
    params = {"token_bits": max(16, decoder.vocab.bit_length()),
              "sequences": [{"prompt": list(p), "max_new": n_new} for p in prompts],
              "max_cycles": cycle_limit(decoder, prompts, n_new)}
    if getattr(decoder, "weight_store", "rom") == "flash":
        params["weights"] = decoder.weight_words
    result = run_bench(design.model, module=BENCH, work_dir=work_dir, params=params)
    return Generation(result["sequences"], result["end_cycle"], time.monotonic() - start)
