"""Print the markdown table of cycles per token against lanes that docs/hardware.md shows.

    .venv/bin/python scripts/cycles_table.py [MODEL] [--lanes 1,4,8,16,32,64] [--vector-lanes N]
        [--matrix-rows R]

Cycles come from ``Decoder.cycles_per_token`` (the sum of the unit latencies, which the Verilator
benches measure exactly); the ratio is against the ideal of ``macs_per_token / (lanes *
matrix_rows)``. Nothing is elaborated, so it takes seconds.
"""

import argparse

from hardwire.commands.common import load, quantized
from hardwire.gen.compile import macs_per_token
from hardwire.gen.hardware import HardwareConfig, decoder_params
from hardwire.hdl.decoder import Decoder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="kjv")
    parser.add_argument("--lanes", default="1,4,8,16,32,64")
    parser.add_argument("--vector-lanes", type=int, default=None)
    parser.add_argument("--matrix-rows", type=int, default=1)
    args = parser.parse_args()
    model = load(argparse.Namespace(model=args.model, tokenizer=None))
    qm = quantized(model, weights="int8", group_size=None, context=None)
    print(f"| lanes | pos 0 | pos {qm.context // 2} | pos {qm.context - 1} |")
    print("|---|---|---|---|")
    for lanes in (int(n) for n in args.lanes.split(",")):
        config = HardwareConfig(lanes=lanes, vector_lanes=args.vector_lanes,
                                matrix_rows=args.matrix_rows)
        decoder = Decoder(params=decoder_params(qm, config))
        cells = []
        for pos in (0, qm.context // 2, qm.context - 1):
            cycles = decoder.cycles_per_token(pos)
            ideal = -(-macs_per_token(qm, pos) // (lanes * args.matrix_rows))
            cells.append(f"{cycles:,} ({cycles / ideal:.2f}×)")
        print(f"| {lanes} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
