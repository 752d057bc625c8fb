"""``hardwire bench``: measure how fast, how big and how good, side by side, in one run.

Sections (``--sections``, all by default): ``engines`` (float, golden and Verilator tokens/s),
``lanes`` (cycles per token measured on Verilator vs estimate vs ideal, with logic area, for
lanes 1…max), ``peers`` (llama.cpp on the same model), ``scaling`` (compile, build, first token
and memory against parameter count), ``quality`` (the ``hardwire quality`` table) and ``fpga``
(``hardwire fpga`` on ``--fpga-board`` for each of ``--fpga-lanes``: area, post-route Fmax and
tokens/s per user at Fmax). Writes
``OUT/<date>-<host>.json``, ``.md`` and plots; prints a table per section. A section that fails
is recorded with its error and the others still run; the exit status is then 1.
"""

import argparse
import tempfile
from pathlib import Path

from rich.markdown import Markdown

from ..errors import ConfigError, HardwireError
from .common import add_model_argument, console, encode_prompt, load, print_json

NAME = "bench"
HELP = ("benchmark engines, lanes, peers, tool scaling, quality and FPGA builds; JSON, markdown "
        "and plots")

SECTIONS = ("engines", "lanes", "peers", "scaling", "quality", "fpga")
PROMPTS = ("In the beginning", "And God said", "Jesus wept")


def add_arguments(parser):
    from ..gen.boards import BOARDS
    add_model_argument(parser)
    parser.add_argument("--sections", default=",".join(SECTIONS), metavar="LIST",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--lanes", type=int, default=16, metavar="N",
                        help="lanes of the Verilator engine (default 16)")
    parser.add_argument("--lane-counts", default=None, metavar="LIST",
                        help="lane counts of the lanes section (default 1, 2, 4, … max)")
    parser.add_argument("--no-area", action="store_true",
                        help="skip the yosys gate count of each lane count")
    parser.add_argument("--repeats", type=int, default=5, metavar="N",
                        help="repeats of each timed run (default 5)")
    parser.add_argument("-n", "--new-tokens", type=int, default=32, metavar="N",
                        help="new tokens per timed generation (default 32)")
    parser.add_argument("--scaling-sizes", default=None, metavar="LIST",
                        help="sizes of the scaling ladder (default 0.2M,1M,4M,15M)")
    parser.add_argument("--scaling-budget", type=int, default=900, metavar="S",
                        help="seconds each size may take before the ladder stops (default 900)")
    parser.add_argument("--quality-tokens", type=int, default=None, metavar="N",
                        help="score at most N tokens of the held-out text (default: all)")
    parser.add_argument("--fpga-board", default="ulx3s-85f", choices=sorted(BOARDS),
                        help="board of the fpga section (default ulx3s-85f)")
    parser.add_argument("--fpga-lanes", default="16,32,64", metavar="LIST",
                        help="lane counts built for the board (default 16,32,64)")
    parser.add_argument("--fpga-matrix-rows", type=int, default=2, metavar="R",
                        help="--matrix-rows of the fpga builds (default 2, as make fpga)")
    parser.add_argument("--fpga-vector-lanes", type=int, default=4, metavar="N",
                        help="--vector-lanes of the fpga builds (default 4, as make fpga)")
    parser.add_argument("--fpga-clock", type=float, default=None, metavar="MHZ",
                        help="design clock of the fpga builds (default: the board's oscillator)")
    parser.add_argument("--fpga-seed", type=int, default=2, metavar="N",
                        help="nextpnr seed of the fpga builds (default 2, as make fpga)")
    parser.add_argument("--fpga-baud", type=int, default=1_000_000, metavar="BAUD",
                        help="UART baud rate of the fpga builds (default 1000000, as make fpga)")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="where designs and builds go (default: a temporary folder)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="Verilator build cache (default WORK/verilator)")
    parser.add_argument("--out", default="bench/results", metavar="DIR",
                        help="where the record goes (default bench/results)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def _list(text, allowed, what):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ConfigError(f"{what}: unknown {bad or text!r} (expected a subset of "
                          f"{','.join(allowed)})")
    return items


def _ints(text, what):
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated integers, found {text!r}") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"{what}: lane counts must be positive, found {text!r}")
    return values


def _sections(args, model, work):
    from ..benchmarks import engines, lanes, scaling
    from ..gen.quantize import quantize

    prompts = [encode_prompt(model.tokenizer, p, model.spec) for p in PROMPTS]
    cache = Path(args.cache) if args.cache else work / "verilator"
    yield "engines", lambda: engines.engine_speeds(
        model, prompts[0], args.new_tokens, args.repeats, work / "engines", cache,
        lanes=args.lanes)
    yield "lanes", lambda: lanes.lanes_sweep(
        quantize(model, weights="int8"), "int8", work / "lanes", cache,
        lanes=_ints(args.lane_counts, "--lane-counts") if args.lane_counts else None,
        prompt=prompts[0], area=not args.no_area,
        on_point=lambda p: console.print(f"lanes {p['lanes']}: "
                                         f"{p['measured_cycles_per_token']:,.0f} cycles/token"))
    yield "peers", lambda: _peers(model, prompts, args, work)
    sizes = (_list(args.scaling_sizes, tuple(scaling.SIZES), "--scaling-sizes")
             if args.scaling_sizes else scaling.LADDER)
    yield "scaling", lambda: scaling.scaling(
        work / "scaling", sizes=sizes, timeout_s=args.scaling_budget,
        on_phase=lambda size, r: console.print(f"scaling {size}: {', '.join(r['phases'])}"))
    yield "quality", lambda: _quality(model, args.quality_tokens)
    yield "fpga", lambda: _fpga(args, work)


def _peers(model, prompts, args, work):
    from ..benchmarks.peers import llama_cpp_peer
    return llama_cpp_peer(model, prompts, args.new_tokens, gguf_path=work / "model.gguf",
                          repeats=args.repeats, threads=(1,))


def _fpga(args, work):
    from ..benchmarks.fpga import fpga_sweep
    from ..gen.boards import board_named
    from .fpga import compile_and_build

    board = board_named(args.fpga_board)

    def build(lanes, out):
        # Exactly `hardwire fpga MODEL --board B --lanes N --vector-lanes V --seed S --baud U
        # [--clock C]`, the rest default.
        options = argparse.Namespace(
            model=args.model, tokenizer=args.tokenizer, config=None, weights=None,
            group_size=None, lanes=lanes, vector_lanes=args.fpga_vector_lanes, context=None,
            rom_style=None, engine=None, weight_store=None, matrix_rows=args.fpga_matrix_rows,
            clock=args.fpga_clock,
            baud=args.fpga_baud, seed=args.fpga_seed,
            router="router2", dsp_blocks=None,
            debug=args.debug)
        return compile_and_build(options, board, out)

    return fpga_sweep(build, board, _ints(args.fpga_lanes, "--fpga-lanes"), work,
                      clock_mhz=args.fpga_clock, on_point=_print_fpga_point)


def _print_fpga_point(p):
    if "error" in p:
        line = f"error: {p['error'].splitlines()[0]}"
    elif not p["fits"]:
        line = "does not fit, over in " + ", ".join(f"{k} by {v:,}"
                                                    for k, v in p["overshoot"].items())
    else:
        logic = p["resources"][0]
        rate = p["tokens_per_s_at_fmax"]
        line = (f"{logic['used']:,} {logic['resource']}, Fmax "
                + (f"{p['fmax_mhz']:.1f} MHz, {rate['pos0']:,.0f} tokens/s at position 0"
                   if rate else "unknown"))
    console.print(f"fpga lanes {p['lanes']}: {line}")


def _quality(model, max_tokens):
    from ..gen.quality import compare_formats
    from .quality import DEFAULT_TEXT, parse_formats
    ids = [int(i) for i in model.tokenizer.encode(DEFAULT_TEXT.read_text(encoding="utf-8"))]
    if max_tokens is not None:
        ids = ids[:max_tokens + 1]
    return compare_formats(model, ids, parse_formats("int8,int4,int4:32,ternary"))


def run(args):
    from ..benchmarks.record import machine, today, versions
    from ..benchmarks.report import markdown, write_record

    wanted = _list(args.sections, SECTIONS, "--sections")
    _ints(args.fpga_lanes, "--fpga-lanes")
    if args.fpga_clock is not None and not args.fpga_clock > 0:
        raise ConfigError(f"--fpga-clock must be a positive frequency in MHz, not "
                          f"{args.fpga_clock:g}")
    if args.repeats < 1 or args.new_tokens < 2:
        raise ConfigError("--repeats must be >= 1 and -n >= 2")
    model = load(args)
    if model.tokenizer is None:
        raise ConfigError(f"{args.model} carries no tokenizer; the benchmark prompts are text")
    base = {"benchmark": "hardwire", "date": today(), "machine": machine(),
              "versions": versions(), "model": model.spec.name,
              "params": model.spec.n_params,
              "settings": {k: v for k, v in vars(args).items()
                           if k not in ("handler", "debug")}}
    measured, failed, record, paths = {}, {}, {}, []
    with tempfile.TemporaryDirectory(prefix="hardwire-bench-") as scratch:
        work = Path(args.work or scratch)
        for section, measure in _sections(args, model, work):
            if section not in wanted:
                continue
            with console.status(f"bench: {section}"):
                try:
                    measured[section] = measure()
                except HardwireError as exc:
                    failed[section] = str(exc)
                except AssertionError as exc:       # BenchFailure: a simulation went wrong
                    failed[section] = f"simulation failed: {exc}"
                except Exception as exc:
                    # A bug in one section must not lose the others' measurements.
                    if args.debug:
                        raise
                    failed[section] = f"{type(exc).__name__}: {exc}"
            console.print(f"bench: {section} {'FAILED' if section in failed else 'done'}")
            # Written after each section, so a later crash loses nothing; write_record adds the
            # day's earlier sections to the dict it is given.
            record = {**base, **measured, **({"failed": dict(failed)} if failed else {})}
            paths = write_record(record, args.out)
    if args.json:
        print_json(record)
    else:
        console.print(Markdown(markdown(record)))
        console.print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0
