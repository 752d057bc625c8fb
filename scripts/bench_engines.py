"""Benchmark: tokens/s of the float reference and the golden integer model on a bundled model.

Writes ``bench/results/<date>-<host>-engines.json`` (median, min and max over repeated runs, with
machine, date and tool versions) and prints a table. Run through ``make bench``.
"""

import argparse
import datetime
import importlib.metadata
import json
import platform
import socket
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hardwire.gen.frontends import load_model
from hardwire.gen.quantize import quantize
from hardwire.sim.golden import GoldenModel
from hardwire.sim.reference import FloatModel

ROOT = Path(__file__).resolve().parents[1]


def measure(engine, prompt, n_new, repeats):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = engine.generate(prompt, n_new, stop_at_eos=False)
        seconds.append(time.perf_counter() - start)
        assert len(tokens) == n_new
    rates = [n_new / s for s in seconds]
    return {"tokens": n_new, "seconds_median": statistics.median(seconds),
            "tokens_per_s_median": statistics.median(rates),
            "tokens_per_s_min": min(rates), "tokens_per_s_max": max(rates), "repeats": repeats}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="kjv")
    parser.add_argument("-n", type=int, default=127, help="new tokens per run (default 127)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    loaded = load_model(args.model)
    prompt = [int(i) for i in loaded.tokenizer.encode("I")]
    engines = {"float": FloatModel(loaded)}
    for weights in ("int8", "int4", "ternary"):
        engines[f"golden-{weights}"] = GoldenModel(quantize(loaded, weights=weights))
    results = {name: measure(engine, prompt, args.n, args.repeats)
               for name, engine in engines.items()}
    base = results["float"]["tokens_per_s_median"]
    for r in results.values():
        r["ratio_to_float"] = r["tokens_per_s_median"] / base
    record = {
        "benchmark": "engines", "model": args.model, "params": loaded.spec.n_params,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {p: importlib.metadata.version(p) for p in ("numpy", "hardwire")},
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record['date'][:10]}-{record['host']}-engines.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    table = Table(title=f"engines on {args.model}: {args.n} tokens, median of {args.repeats}")
    for column in ("engine", "tokens/s (median)", "min", "max", "× float"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['tokens_per_s_median']:,.0f}", f"{r['tokens_per_s_min']:,.0f}",
                      f"{r['tokens_per_s_max']:,.0f}", f"{r['ratio_to_float']:.2f}")
    Console().print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
