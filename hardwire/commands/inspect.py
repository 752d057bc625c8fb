"""``hardwire inspect``: architecture, parameters, weight formats and ROM bits per tensor."""

import numpy as np
from rich.table import Table

from ..gen.model import tensor_names, tensor_shapes
from .common import (
    add_model_argument,
    add_weight_arguments,
    console,
    load,
    print_json,
    quantized_from_args,
)

NAME = "inspect"
HELP = "show a model's architecture, parameters, weight formats and ROM bits per tensor"


def add_arguments(parser):
    add_model_argument(parser)
    add_weight_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")


def _source_formats(model):
    """Format each tensor has in the file: a kept block type, or the float it was stored as."""
    kept = getattr(model, "block_quantized", {}) or {}
    default = getattr(model, "format", "native")
    return {name: kept[name].source_type if name in kept else default
            for name in tensor_names(model.spec)}


def describe(model, qm):
    """The report as plain data (what ``--json`` prints)."""
    spec = model.spec
    shapes = tensor_shapes(spec)
    rom = qm.rom_bits()
    linears = qm.linears()
    sources = _source_formats(model)
    tensors = []
    for name in tensor_names(spec):
        q = linears.get(name)
        tensors.append({
            "name": name, "shape": list(shapes[name]), "params": int(np.prod(shapes[name])),
            "source_format": sources[name],
            "weight_format": q.source_format if q is not None else "int16 gain",
            "weight_bits": q.bits if q is not None else 16,
            "group_size": q.group_size if q is not None else None,
            "rom_bits": int(rom[name]),
        })
    return {
        "model": str(getattr(model, "source", "")),
        "format": getattr(model, "format", "hwq"),
        "architecture": spec.to_dict(),
        "params": spec.n_params,
        "weight_format": qm.weight_format, "group_size": qm.group_size, "context": qm.context,
        "tensors": tensors,
        # A tied head shares the embedding ROM and adds only its own requant constants.
        "tied_head_rom_bits": int(rom["head"]) if spec.tied_embeddings else 0,
        "rom_bits": {"tensors": int(sum(v for k, v in rom.items() if k != "tables")),
                     "tables": int(rom["tables"]),
                     "total": int(sum(rom.values()))},
    }


def run(args):
    model = load(args)
    qm = quantized_from_args(model, args)
    report = describe(model, qm)
    if args.json:
        print_json(report)
        return 0
    arch = Table(title=f"{args.model}: {report['format']}, {report['params']:,} parameters",
                 show_header=False)
    for key, value in report["architecture"].items():
        arch.add_row(key, str(value))
    console.print(arch)
    table = Table(title=f"tensors as {qm.weight_format}"
                  + (f", groups of {qm.group_size}" if qm.group_size else ", per-row scales"))
    for column in ("tensor", "shape", "params", "in file", "on chip", "ROM bits"):
        table.add_column(column, justify="right" if column in ("params", "ROM bits") else "left")
    for t in report["tensors"]:
        table.add_row(t["name"], "×".join(map(str, t["shape"])), f"{t['params']:,}",
                      t["source_format"], t["weight_format"], f"{t['rom_bits']:,}")
    bits = report["rom_bits"]
    if report["tied_head_rom_bits"]:
        table.add_row("head (tied to embed)", "", "", "", "requant only",
                      f"{report['tied_head_rom_bits']:,}")
    table.add_row("tables (RoPE, rsqrt, exp2, SiLU)", "", "", "", "", f"{bits['tables']:,}")
    table.add_row("[bold]total", "", f"{report['params']:,}", "", "",
                  f"[bold]{bits['total']:,} ({bits['total'] / 8 / 1024:.1f} KiB)")
    console.print(table)
    return 0
