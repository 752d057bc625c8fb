# amaranth: UnusedElaboratable=no
"""``hardwire silicon MODEL|DIR``: a mask-ROM chip estimate (yosys gate and transistor counts, ROM
and SRAM bits, area at a named process node) with every assumption beside its number.

``DIR``: a directory written by ``hardwire compile`` (holding ``manifest.json``); anything else is
a model, compiled on the fly with the usual compile options into ``--out``. The report is printed
and written to ``DIR/silicon.json``.
"""

import json
from pathlib import Path

from ..errors import ConfigError
from .common import console, print_json
from .compile import add_compile_arguments, compile_from_args

NAME = "silicon"
HELP = "estimate a mask-ROM chip: yosys gates and transistors, ROM/SRAM bits, area at a node"

__all__ = ["NAME", "HELP", "add_arguments", "run", "report"]


def add_arguments(parser):
    from ..gen.silicon import EFFORTS
    from ..gen.silicon_nodes import DEFAULT_NODE, NODES
    add_compile_arguments(parser)
    parser.add_argument("--node", choices=sorted(NODES), default=DEFAULT_NODE,
                        help=f"process node whose densities price the area (default "
                             f"{DEFAULT_NODE})")
    parser.add_argument("--effort", choices=EFFORTS, default="gates",
                        help="gates: techmap + opt (minutes); abc: also ABC's gate-level "
                             "optimization (much slower)")
    parser.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                        help="also report tokens/s at this assumed clock")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where to compile a MODEL (default build/silicon/<name>)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _compiled_dir(args):
    """The compiled directory named by ``args.model``, or the one the model it names is compiled
    into. A directory that holds neither ``manifest.json`` nor a model's ``config.json`` is a
    :class:`ConfigError` naming the missing manifest."""
    target = Path(str(args.model))
    if target.is_dir() and (target / "manifest.json").exists():
        return target
    if target.is_dir() and not (target / "config.json").exists():
        raise ConfigError(f"{target / 'manifest.json'}: no manifest.json here; give a model or "
                          f"a directory written by `hardwire compile`")
    out = Path(args.out) if args.out else Path("build/silicon") / target.name
    compile_from_args(args, out)
    return out


def report(out_dir, *, node, effort="gates", clock_mhz=None):
    """Synthesize ``out_dir`` and estimate it; the JSON-ready report (also written to
    ``out_dir/silicon.json``)."""
    from ..gen.silicon import estimate, read_manifest, synthesize
    manifest = read_manifest(out_dir)
    verilog = Path(out_dir) / manifest["files"]["verilog"]
    with console.status(f"yosys: generic synthesis of {verilog} (effort {effort})"):
        synthesis = synthesize(out_dir, manifest, effort=effort)
    result = estimate(manifest, synthesis, node, clock_mhz=clock_mhz)
    data = {"model": manifest["model"].get("name"), "config": manifest["config"],
            "inputs_sha256": manifest.get("inputs_sha256"),
            **result,
            "synthesis": {k: synthesis[k] for k in ("yosys", "effort", "script", "seconds",
                                                    "cpu_seconds", "num_cells", "transistors",
                                                    "cells", "memories")}}
    (Path(out_dir) / "silicon.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def _fmt(value):
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


def run(args):
    out_dir = _compiled_dir(args)
    data = report(out_dir, node=args.node, effort=args.effort, clock_mhz=args.clock_mhz)
    if args.json:
        print_json(data)
        return 0
    from rich.table import Table
    table = Table(title=f"{data['model']} at {data['node']['title']}", show_lines=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("assumption / source", overflow="fold")
    for row in data["rows"]:
        table.add_row(row["what"], _fmt(row["value"]), row["unit"], row["why"])
    console.print(table)
    syn, s = data["synthesis"], data["sanity"]
    console.print(f"yosys {syn['yosys']}, effort {syn['effort']}: {syn['seconds']} s wall, "
                  f"{syn['cpu_seconds']} s CPU; report in {out_dir / 'silicon.json'}")
    console.print(f"sanity check: {s['chip']}, {s['node']}: {s['transistors']:.3g} transistors "
                  f"on {s['area_mm2']:g} mm² = {s['transistors_per_um2']} transistors/µm² "
                  f"({s['source']})")
    return 0
