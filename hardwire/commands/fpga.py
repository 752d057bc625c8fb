# amaranth: UnusedElaboratable=no
"""``hardwire fpga``: a model compiled for an FPGA board, behind a UART, synthesized, placed and
routed with the YoWASP tools; prints what it uses, its Fmax and the tokens per second.

Writes into ``--out`` (default ``build/fpga/BOARD``): ``rtl/`` (``hardwire_top.v`` and
``manifest.json``, as ``hardwire compile``), ``build/`` (the Amaranth build tree and tool logs),
the bitstream ``hardwire_BOARD.bit``/``.bin`` and ``report.json`` beside it, and with
``--weight-store flash`` the weights image ``hardwire_weights.bin`` for the SPI flash.

Exit status 0 when the design fits and meets the clock; 1 when it does not fit (no bitstream;
the table and report say by how much per resource) or when post-route Fmax is below the clock
(the bitstream is written, but is not safe at that clock); 2 for bad options or input.
"""

from pathlib import Path

from rich.table import Table

from ..gen.dsp_allocation import describe
from .common import console
from .compile import add_compile_arguments, compile_from_args

NAME = "fpga"
HELP = ("build a model for an FPGA board (ULX3S 85F, iCEBreaker): bitstream, utilization, Fmax, "
        "tokens/s")

DEFAULT_BAUD = 115200

__all__ = ["NAME", "HELP", "DEFAULT_BAUD", "add_arguments", "run", "compile_and_build"]


def add_arguments(parser):
    from ..gen.boards import BOARDS
    add_compile_arguments(parser)
    parser.add_argument("--board", required=True, choices=sorted(BOARDS),
                        help="target board")
    parser.add_argument("--clock", type=float, default=None, metavar="MHZ",
                        help="design clock in MHz, made by the board's PLL (default: the board's "
                             "oscillator, 25 MHz on the ULX3S, 12 MHz on the iCEBreaker)")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"UART baud rate (default {DEFAULT_BAUD})")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--router", choices=("router1", "router2"), default="router2",
                        help="nextpnr router (default router2, which finishes congested designs "
                             "such as the bundled model at 16 lanes that router1 does not)")
    parser.add_argument("--dsp-blocks", type=int, default=None, metavar="N",
                        help="most DSP blocks to share out among the multipliers (ECP5; default: "
                             "all the device has; the wide ones always get theirs, 0 keeps only "
                             "them): fewer move multipliers into LUTs")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default build/fpga/BOARD)")


def _table(report):
    fits = report["fits"]
    table = Table(title=f"{report['model']} on {report['board']} ({report['device']}): "
                        + ("fits" if fits else "DOES NOT FIT"))
    for col in ("resource", "used", "available", "%", "over by"):
        table.add_column(col, justify="left" if col == "resource" else "right")
    for r in report["resources"]:
        avail = r["available"]
        table.add_row(r["resource"], f"{r['used']:,}", "-" if avail is None else f"{avail:,}",
                      "-" if r["percent"] is None else f"{r['percent']:.1f}",
                      f"{r['over']:,}" if r["over"] else "")
    return table


def _speed_table(report):
    clock = report["clock"]
    cyc = report["cycles_per_token"]
    rates = report["tokens_per_s"]
    table = Table(title="speed, one sequence (tokens/s per user)")
    for col in ("", "position 0", "mean over the context", "last position"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("cycles per token", *(f"{cyc[k]:,}" for k in ("pos0", "mean", "last")))
    table.add_row(f"at the {clock['mhz']:g} MHz clock",
                  *(f"{rates['at_clock'][k]:,.0f}" for k in ("pos0", "mean", "last")))
    if rates["at_fmax"]:
        table.add_row(f"at Fmax {clock['fmax_mhz']:.1f} MHz",
                      *(f"{rates['at_fmax'][k]:,.0f}" for k in ("pos0", "mean", "last")))
    return table


def compile_and_build(args, board, out):
    """Compile the model as the compile options of ``args`` say (those of ``hardwire compile``)
    into ``out/rtl`` and build it for ``board`` into ``out`` at ``args.clock`` MHz (``None``: the
    oscillator) with its UART at ``args.baud``, nextpnr seed ``args.seed``, router
    ``args.router`` and at most ``args.dsp_blocks`` DSP blocks.

    Returns :func:`~hardwire.gen.fpga.build_board`'s report; raises what it raises (and
    :class:`~hardwire.errors.ConfigError` for compile options the model cannot take)."""
    from ..gen.fpga import build_board

    out = Path(out)
    _, _, decoder, manifest = compile_from_args(args, out / "rtl")
    title = f"synthesis, place and route for {board.name}"
    with console.status(title) as status:
        def progress(stage, seconds):
            status.update(f"{title}: {stage} ({seconds / 60:.0f} min)")
        return build_board(decoder, manifest, board, clock_mhz=args.clock, baud=args.baud,
                           out_dir=out, seed=args.seed, router=args.router,
                           dsp_blocks=args.dsp_blocks, progress=progress)


def run(args):
    from ..gen.boards import board_named

    board = board_named(args.board)
    out = Path(args.out or f"build/fpga/{board.name}")
    report = compile_and_build(args, board, out)
    console.print(_table(report))
    if report.get("dsp_mapping"):
        console.print(describe(report["dsp_mapping"]))
    if not report["fits"]:
        over = ", ".join(f"{r['resource']} by {r['over']:,} ({r['used']:,} of "
                         f"{r['available']:,})" for r in report["resources"] if r["over"])
        over = f"over in {over}" if over else report["placement"]
        config = report["config"]
        if config.get("engine") != "serial":
            hint = "--engine serial"
        elif config.get("weight_store", "rom") == "rom" and board.family == "ice40":
            hint = "--weight-store flash (weights in SPRAM, read from SPI flash)"
        else:
            hint = "a smaller model"
        console.print(f"does not fit {board.name}: {over}. Try fewer --lanes, "
                      f"--weights int4 or ternary, a smaller --context or {hint}.")
        console.print(f"report: {out / 'report.json'}")
        return 1
    console.print(_speed_table(report))
    clock = report["clock"]
    verdict = "meets" if clock["met"] else "MISSES"
    console.print(f"post-route Fmax {clock['fmax_mhz']:.2f} MHz {verdict} the "
                  f"{clock['mhz']:g} MHz clock; UART {report['uart']['baud']} baud carries at "
                  f"most {report['tokens_per_s']['uart_limit']:,.0f} tokens/s")
    for line in report.get("limits", ()):
        console.print(f"limit: {line}")
    console.print(f"bitstream: {out / report['files']['bitstream']}, report: "
                  f"{out / 'report.json'} ({report['times_s']['flow']:.0f} s in the tools)")
    flash = report.get("flash")
    if flash:
        console.print(f"weights: {out / report['files']['weights_image']} ({flash['bytes']:,} "
                      f"bytes, CRC-32 {flash['crc32']}) go into the SPI flash at "
                      f"{flash['offset']}; the board reads them in {flash['load_ms']:g} ms after "
                      f"power-up and reports WEIGHTS_ERROR if they are not this design's. "
                      f"Program with: {'; '.join(flash['program'])} (in {out})")
    return 0 if clock["met"] else 1
