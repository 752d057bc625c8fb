# amaranth: UnusedElaboratable=no
"""``hardwire verify``: compile a model, build it with Verilator, generate with the cocotb bench
and compare every token with the golden integer model.

Exit status 0 only when every generated token equals ``GoldenModel.generate``; 1 on a mismatch
(the message names the prompt and the first differing position); 2 for bad options or input.
"""

import contextlib
import os
import sys
from pathlib import Path

from rich.table import Table

from ..errors import ConfigError, ToolchainError
from ..toolchain import fst_build_args
from .common import (
    add_prompt_arguments,
    console,
    decode,
    encode_prompt,
    engine_words,
    parse_token_ids,
)
from .compile import add_compile_arguments, compile_from_args, resolve

NAME = "verify"
HELP = "compile a model, simulate it on Verilator and check every token against the golden model"


def add_arguments(parser):
    add_compile_arguments(parser)
    add_prompt_arguments(parser, what="a prompt", new_tokens=32)
    parser.add_argument("--build-dir", metavar="DIR", default=None,
                        help="where the design, the Verilator build and the runs go (default "
                             "build/verify/MODEL-WEIGHTS-LANES)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="Verilator build cache (default BUILD_DIR/verilator)")
    parser.add_argument("--waves", action="store_true",
                        help="record an FST waveform (BUILD_DIR/run/dump.fst) and print its path")


def _prompts(model, args):
    spec = model.spec
    prompts = []
    for text in args.prompt or ():
        prompts.append((text, encode_prompt(model.tokenizer, text, spec)))
    for ids in args.tokens or ():
        prompts.append((ids, parse_token_ids(ids, spec.vocab_size)))
    if not prompts:
        raise ConfigError("give at least one --prompt TEXT or --tokens 1,2,3")
    return prompts


@contextlib.contextmanager
def _waves(on):
    # cocotb's runner reads WAVES at build and at test time; it is not an argument of
    # build_verilator/run_bench.
    if not on:
        yield
        return
    saved = os.environ.get("WAVES")
    os.environ["WAVES"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["WAVES"]
        else:
            os.environ["WAVES"] = saved


def _first_difference(got, want):
    for k, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return k
    return min(len(got), len(want))


def run(args):
    from ..sim.decoder_run import build_design, generate
    from ..sim.golden import GoldenModel
    from ..sim.verilator import BenchFailure

    n = args.new_tokens
    if not 0 <= n < 1 << 16:
        raise ConfigError(f"-n must be from 0 to {(1 << 16) - 1}, not {n}")
    options = resolve(args)
    name = Path(str(args.model).rstrip("/")).name or "model"
    build = Path(args.build_dir or f"build/verify/{name}-{options.weights}"
                 f"{'' if options.group_size is None else f'-g{options.group_size}'}"
                 f"-{'serial' if options.engine == 'serial' else options.lanes}"
                 f"{'-flash' if options.weight_store == 'flash' else ''}")
    model, qm, decoder, manifest = compile_from_args(args, build / "rtl")
    prompts = _prompts(model, args)
    golden = GoldenModel(qm)
    expected = []
    for label, ids in prompts:
        needed = len(ids) + n - 1
        if needed > decoder.context:
            raise ConfigError(f"prompt {label!r}: {len(ids)} tokens + {n} new need {needed} "
                              f"positions, more than the context of {decoder.context}")
        expected.append(golden.generate(ids, n))

    cache = Path(args.cache) if args.cache else build / "verilator"
    trace_args = ()
    if args.waves:
        with console.status("preparing the FST writer (builds lz4 once where the system has "
                            "no lz4.h)"):
            trace_args = fst_build_args()
    work = build / "run"
    with _waves(args.waves):
        with console.status("building with Verilator (minutes for a large model)"):
            try:
                design = build_design(qm, options, build / "rtl", cache, build_args=trace_args,
                                      verilog=(decoder, manifest))
            except BenchFailure as exc:
                raise ToolchainError(str(exc)) from None
        with console.status(f"simulating {len(prompts)} prompt(s), {n} new tokens each"):
            try:
                run = generate(design, [ids for _, ids in prompts], n, work)
            except BenchFailure as exc:
                print(f"hardwire verify: simulation failed: {exc}", file=sys.stderr)
                return 1

    how = "cached build" if design.model.cached else f"built in {design.build_s:.1f} s"
    engine = engine_words(options.as_dict())
    if options.weight_store == "flash":
        engine += ", weights streamed in as from flash"
    table = Table(title=f"hardwire verify: {qm.spec.name} {options.weights}, {engine} "
                        f"({how}, simulated {run.cycles:,} cycles in "
                        f"{run.seconds:.1f} s)")
    for column in ("prompt", "tokens", "text", "cycles/token measured", "estimated", "match"):
        table.add_column(column)
    failures = []
    for (label, ids), want, seq in zip(prompts, expected, run.sequences, strict=True):
        got, cycles = seq["tokens"], seq["cycles"]
        gaps = [b - a for a, b in zip(cycles, cycles[1:], strict=False)]
        estimate = [decoder.cycles_per_token(len(ids) + k) for k in range(len(gaps))]
        measured = f"{sum(gaps) / len(gaps):.1f}" if gaps else "-"
        estimated = f"{sum(estimate) / len(estimate):.1f}" if estimate else "-"
        ok = got == want
        if not ok:
            k = _first_difference(got, want)
            failures.append(f"prompt {label!r}: first difference at new token {k}: hardware "
                            f"{got[k] if k < len(got) else 'nothing'}, golden "
                            f"{want[k] if k < len(want) else 'nothing'} (hardware {got}, "
                            f"golden {want})")
        elif gaps != estimate:
            failures.append(f"prompt {label!r}: cycles between tokens {gaps} differ from "
                            f"cycles_per_token {estimate}")
            ok = False
        table.add_row(str(label), ",".join(map(str, got)), repr(decode(model.tokenizer, got)),
                      measured, estimated, "yes" if ok else "NO")
    console.print(table)
    if args.waves:
        print(f"waveform: {work / 'dump.fst'}")
    if failures:
        for line in failures:
            console.print(f"[bold red]mismatch[/]: {line}")
        return 1
    print(f"verify: {len(prompts)} prompt(s), {sum(map(len, expected))} tokens equal the golden "
          f"model")
    return 0
