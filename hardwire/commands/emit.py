# amaranth: UnusedElaboratable=no
"""``hardwire emit``: Verilog of one hardware unit built from one tensor of a model.

Until the whole-model compiler lands, this is how RTL is made from a real model: the matrix–vector
unit of a weight matrix (int8 weights as ROM constants, raw accumulators out), written with a
JSON sidecar describing ports, timing and ROM size. Output is deterministic: the same model,
tensor and lanes give byte-identical files.
"""

import json
from pathlib import Path

from ..errors import ConfigError
from .common import add_model_argument, console, load, quantized

NAME = "emit"
HELP = "write the Verilog of one hardware unit (matvec) for a tensor of a model"


def add_arguments(parser):
    parser.add_argument("unit", choices=("matvec",), help="which unit to emit")
    add_model_argument(parser)
    parser.add_argument("--tensor", default="layers.0.wq", metavar="NAME",
                        help="canonical weight matrix name (default layers.0.wq)")
    parser.add_argument("--lanes", type=int, default=8, metavar="N",
                        help="multiply-accumulates per cycle (default 8)")
    parser.add_argument("--out", default="build/verilog", metavar="DIR",
                        help="output directory (default build/verilog)")


def run(args):
    from ..hdl.matvec import MatVec
    from ..sim.verilator import verilog_text

    model = load(args)
    qm = quantized(model, weights="int8")
    linears = qm.linears()
    if args.tensor not in linears or args.tensor == "embed":
        names = ", ".join(n for n in linears if n != "embed")
        raise ConfigError(f"--tensor: {args.tensor!r} is not a weight matrix of {args.model} "
                          f"(expected one of {names})")
    weights = linears[args.tensor].values.tolist()
    try:
        unit = MatVec(weights=weights, lanes=args.lanes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--lanes: {exc}") from None
    top = "matvec_" + args.tensor.replace(".", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console.status(f"converting {top} to Verilog"):
        text = verilog_text(unit, name=top)
    (out / f"{top}.v").write_text(text)
    sidecar = {"top": top, "model": args.model, "tensor": args.tensor, "weights": "int8",
               "shape": [len(weights), len(weights[0])], "lanes": args.lanes,
               "acc_bits": unit.acc_bits, "rom_bits": unit.rom_bits,
               "cycles_per_vector": unit.cycles_per_vector, "latency": unit.latency,
               "ports": {"i": "whole int8 input vector per transfer (element k in bits 8k..8k+7)",
                         "o": f"one signed {unit.acc_bits}-bit accumulator per row, row order"}}
    (out / f"{top}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    console.print(f"wrote {out / (top + '.v')} ({len(text):,} bytes), "
                  f"{unit.cycles_per_vector} cycles/vector, {unit.rom_bits:,} ROM bits")
    return 0
