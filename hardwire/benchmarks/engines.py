"""Engine speed in one run: tokens/s of the float reference, the golden integer model (each
weight format) and the Verilator simulation of the compiled design, with ratios to float."""

from pathlib import Path

from ..gen.compile import CompileOptions
from ..gen.quantize import quantize
from ..sim.decoder_run import build_design, generate
from ..sim.golden import GoldenModel
from ..sim.reference import FloatModel
from .record import repeat, spread

__all__ = ["engine_speeds"]


def _rates(n_new, seconds):
    rates = spread([n_new / s for s in seconds])
    return {"tokens": n_new, "tokens_per_s": rates, "seconds": spread(seconds)}


def engine_speeds(loaded, prompt, n_new, repeats, work, cache, *, lanes=16, verilator=True,
                  formats=("int8", "int4", "ternary")):
    """``{engine: {"tokens_per_s": spread, ...}}``; the Verilator entry also has cycles/s and
    its build time, and generates the int8 design's tokens (checked against golden)."""
    results = {}
    engine = FloatModel(loaded)
    _, seconds = repeat(lambda: engine.generate(prompt, n_new, stop_at_eos=False), repeats)
    results["float"] = _rates(n_new, seconds)
    for weights in formats:
        golden = GoldenModel(quantize(loaded, weights=weights))
        _, seconds = repeat(lambda g=golden: g.generate(prompt, n_new, stop_at_eos=False),
                            repeats)
        results[f"golden-{weights}"] = _rates(n_new, seconds)
    if verilator:
        qm = quantize(loaded, weights="int8")
        design = build_design(qm, CompileOptions(lanes=lanes), Path(work) / "rtl", cache)
        expected = GoldenModel(qm).generate(prompt, n_new)
        runs = [generate(design, [prompt], n_new, Path(work) / f"run-{k}")
                for k in range(repeats)]
        entry = _rates(n_new, [r.seconds for r in runs])
        entry.update({
            "engine": f"Verilator, int8, lanes {lanes}",
            "cycles_per_s": spread([r.cycles / r.seconds for r in runs]),
            "build_s": design.build_s, "compile_s": design.compile_s,
            "token_exact": all(r.sequences[0]["tokens"] == expected for r in runs)})
        results["verilator-int8"] = entry
    base = results["float"]["tokens_per_s"]["median"]
    for entry in results.values():
        entry["ratio_to_float"] = entry["tokens_per_s"]["median"] / base
    return results
