"""Which multipliers an ECP5 build puts into DSP blocks (gen/dsp_allocation.py): the sharing
rule, and on a real board design that yosys' synthesis maps exactly the blocks the count
predicted."""

import dataclasses
import re
import subprocess

import pytest
from quant_helpers import random_loaded

from hardwire.cli import main
from hardwire.errors import ToolchainError
from hardwire.gen import fpga
from hardwire.gen.boards import BoardSystem, board_named
from hardwire.gen.compile import CompileOptions, compile_model
from hardwire.gen.dsp_allocation import (
    UNIT_GROUPS,
    choose,
    describe,
    groups_of,
    mapping_script,
    parse_counts,
    selection,
)
from hardwire.gen.quantize import quantize
from hardwire.hdl.board_top import BoardTop

GROUPS = ["mac_row0", "mac_row1", "units"]
COUNTS = {"mac_row0": 64, "mac_row1": 64, "units": 48, "wide": 35}


@pytest.mark.parametrize("available,taken,blocks", [
    (211, GROUPS, 211), (210, ["mac_row0", "mac_row1"], 163), (162, ["mac_row0", "units"], 147),
    (147, ["mac_row0", "units"], 147), (146, ["mac_row0"], 99), (98, ["units"], 83),
    (82, [], 35), (10, [], 35)])
def test_groups_get_blocks_in_order_while_they_fit(available, taken, blocks):
    assert choose(COUNTS, GROUPS, available) == (taken, blocks)


def test_groups_and_counts_come_from_the_design_and_yosys():
    rtlil = "wire width 10 \\mac_row1_lane3\nwire width 10 \\mac_row0_lane0\n"
    assert groups_of(rtlil) == GROUPS and groups_of("wire \\x\n") == ["units"]
    # The named units the design's source attributes mention, in UNIT_GROUPS' order.
    sources = ('attribute \\src "/x/hdl/swiglu.py:40"\nwire \\mac_row0_lane0\n'
               'attribute \\src "/x/hdl/attention.py:9|/x/hdl/layer.py:3"\n')
    assert groups_of(sources) == ["mac_row0", "attention", "swiglu", "units"]
    assert parse_counts("64 objects.\n128 objects.\n176 objects.\n211 objects.\n",
                        GROUPS) == COUNTS
    with pytest.raises(ToolchainError, match="unexpected"):
        parse_counts("64 objects.\n", GROUPS)
    with pytest.raises(ValueError, match="unknown multiplier group"):
        selection("mac")
    assert selection("rope").endswith("a:src=*/rope.py:* %i")
    # The rest: every named unit's and the MAC array's taken away.
    assert all(f"a:src=*/{u}.py:* %d" in selection("units") for u in ("matvec", *UNIT_GROUPS))


def test_mapping_scripts():
    lines = mapping_script(["mac_row1", "units"]).splitlines()
    # The chosen groups first (mul2dsp renames what it skips), then the wide ones.
    assert lines[0].endswith("w:*mac_row1_lane* %ci1 t:$mul %i")
    assert lines[1].endswith("a:src=*/embedding.py:* %d")
    assert all("DSP_A_MINWIDTH=2" in line for line in lines[:2])
    assert lines[2].endswith("DSP_B_MINWIDTH=9") and lines[3] == "chtype -set $mul t:$__soft_mul"
    assert len(mapping_script([]).splitlines()) == 2
    assert describe({"groups": ["mac_row0", "units"], "blocks": 147, "available": 156,
                     "counts": COUNTS}) == (
        "DSP blocks: the wide multipliers, 1 of the MAC array's 2 rows of products, the narrow "
        "multipliers of the other units (147 of 156); in LUTs: mac_row1")
    assert describe({"groups": GROUPS, "blocks": 211, "available": 256, "counts": COUNTS}) == (
        "DSP blocks: the wide multipliers, the MAC array's products, the narrow multipliers of "
        "the other units (211 of 256); every multiplier has one")
    # Groups without a multiplier are not named, taken or not.
    counts = {"mac_row0": 4, "attention": 8, "rope": 4, "swiglu": 0, "units": 0, "wide": 9}
    assert describe({"groups": ["mac_row0", "rope", "swiglu", "units"], "blocks": 17,
                     "available": 20, "counts": counts}) == (
        "DSP blocks: the wide multipliers, the MAC array's products, the narrow multipliers of "
        "rope (17 of 20); in LUTs: attention")


def _yosys_blocks(build_dir, tools):
    proc = subprocess.run([tools["yosys"], "-q", "-s", f"{fpga.NAME}.ys", "-p",
                           "tee -o blocks.txt select -count t:MULT18X18D"],
                          cwd=build_dir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return int(re.match(r"(\d+) objects", (build_dir / "blocks.txt").read_text()).group(1))


# ~1 min of one core: yosys synthesizes a small board design twice (no place and route).
@pytest.mark.fpga
def test_synthesis_maps_the_predicted_blocks(tmp_path):
    qm = quantize(random_loaded(3, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8,
                                ffn_dim=16, vocab_size=8, max_seq_len=4), weights="int8")
    options = CompileOptions(lanes=4, matrix_rows=2, vector_lanes=1)
    decoder, manifest = compile_model(qm, options, tmp_path / "rtl", source_hash="abc")
    board = board_named("ulx3s-85f")
    top = BoardSystem(top=BoardTop(decoder=decoder, divisor=217,
                                   model_id=fpga.model_id(manifest)), board=board, pll=None)
    _, tools, dsp = fpga.prepare_flow(top, board, tmp_path / "all")
    counts = dsp["counts"]
    # Two rows of 4 products in the MAC array; each unit's narrow ones, the rest, the wide ones.
    assert list(counts) == ["mac_row0", "mac_row1", *UNIT_GROUPS, "units", "wide"]
    assert counts["mac_row0"] == counts["mac_row1"] == 4 and counts["attention"] >= 4
    assert counts["rope"] > 0 and counts["swiglu"] > 0 and counts["embedding"] > 0
    assert dsp["groups"] == list(counts)[:-1]
    assert dsp["blocks"] == sum(counts.values()) == _yosys_blocks(tmp_path / "all", tools)
    # Room for one row and a bit: the second row's products go to LUTs, and what the bit holds
    # of the units' goes to blocks.
    room = counts["wide"] + counts["mac_row0"] + counts["mac_row1"] - 1
    _, tools, dsp = fpga.prepare_flow(top, dataclasses.replace(board, dsp_blocks=room),
                                      tmp_path / "row")
    assert dsp["groups"][0] == "mac_row0" and "mac_row1" not in dsp["groups"]
    assert dsp["groups"][1:] == choose(counts, list(counts)[2:-1], room - 4)[0]
    predicted = counts["wide"] + sum(counts[g] for g in dsp["groups"])
    assert dsp["blocks"] == predicted == _yosys_blocks(tmp_path / "row", tools)


class _Stop(Exception):
    pass


def test_dsp_blocks_caps_what_is_shared_out(tmp_path, monkeypatch):
    qm = quantize(random_loaded(3, dim=8, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=8,
                                ffn_dim=8, vocab_size=8, max_seq_len=4), weights="int8")
    decoder, manifest = compile_model(qm, CompileOptions(lanes=1), tmp_path / "rtl",
                                      source_hash="abc")
    seen = []

    def place_and_route(system, board, build_dir, **kwargs):
        seen.append(board.dsp_blocks)
        # Never elaborated here: keep Amaranth from warning about it when it is collected.
        for elaboratable in (system, system._top):
            elaboratable._MustUse__silence = True
        raise _Stop

    monkeypatch.setattr(fpga, "place_and_route", place_and_route)
    board = board_named("ulx3s-85f")
    for cap, blocks in ((40, 40), (0, 0), (1000, 156), (None, 156)):
        with pytest.raises(_Stop):
            fpga.build_board(decoder, manifest, board, clock_mhz=None, baud=115200,
                             out_dir=tmp_path / "out", dsp_blocks=cap)
        assert seen.pop() == blocks


def test_dsp_blocks_errors(tmp_path, capsys):
    assert main(["fpga", "kjv-micro", "--board", "ulx3s-85f", "--dsp-blocks", "-1",
                 "--out", str(tmp_path / "a")]) == 2
    assert "--dsp-blocks must be a whole number >= 0, not -1" in capsys.readouterr().err
    assert main(["fpga", "kjv-micro", "--board", "icebreaker", "--engine", "serial",
                 "--dsp-blocks", "4", "--out", str(tmp_path / "b")]) == 2
    assert "--dsp-blocks applies to ECP5 boards" in capsys.readouterr().err
