# amaranth: UnusedElaboratable=no
"""The silicon estimate: yosys counts of a tiny compiled model, memory bits by kind, area arithmetic
against the node table, error paths."""

import argparse
import json
import shutil

import pytest
from quant_helpers import random_loaded

from hardwire.commands import silicon as command
from hardwire.errors import ConfigError
from hardwire.gen.compile import CompileOptions, compile_model
from hardwire.gen.quantize import quantize
from hardwire.gen.silicon import (
    CMOS_TRANSISTORS,
    estimate,
    parse_memories,
    read_manifest,
    synthesis_script,
    synthesize,
)
from hardwire.gen.silicon_nodes import MEMORY_ARRAY_EFFICIENCY, NODES, PLACEMENT_UTILIZATION

SHAPE = dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=4, ffn_dim=8, vocab_size=11,
             max_seq_len=4)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("silicon")
    qm = quantize(random_loaded(5, **SHAPE), weights="int8")
    _, manifest = compile_model(qm, CompileOptions(lanes=1), out, source_hash="x")
    return out, manifest


@pytest.fixture(scope="module")
def synthesized(compiled):
    out, manifest = compiled
    return synthesize(out, manifest)


def _parser():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser


@pytest.mark.fpga
def test_counts_match_yosys_costs(synthesized):
    cells = synthesized["cells"]
    assert set(cells) <= set(CMOS_TRANSISTORS)
    assert cells.get("$_DFF_P_", 0) > 0 and synthesized["num_cells"] == sum(cells.values())
    assert synthesized["transistors"] == sum(CMOS_TRANSISTORS[k] * n for k, n in cells.items())
    assert synthesized["transistors"] > 0


@pytest.mark.fpga
def test_memories_by_kind(synthesized, compiled):
    _, manifest = compiled
    kinds = {m["kind"] for m in synthesized["memories"]}
    assert kinds == {"weights", "table", "sram"}
    srams = [m for m in synthesized["memories"] if m["kind"] == "sram"]
    assert {m["name"].rsplit(".", 1)[-1] for m in srams} == {"k_mem", "v_mem", "score_mem"}
    assert all(m["write_ports"] >= 1 for m in srams)
    weights = sum(m["bits"] for m in synthesized["memories"] if m["kind"] == "weights")
    # yosys may trim constant bits of a ROM word, never add any beyond the model's
    assert 0 < weights <= manifest["rom_bits"]["total"]


@pytest.mark.fpga
@pytest.mark.parametrize("node", sorted(NODES))
def test_area_arithmetic(synthesized, compiled, node):
    _, manifest = compiled
    est = estimate(manifest, synthesized, node, clock_mhz=100)
    rows = {r["what"]: r for r in est["rows"]}
    n = NODES[node]
    assert rows["weight ROM bits"]["value"] == manifest["rom_bits"]["total"]
    table_bits = sum(m["bits"] * m["read_ports"] for m in synthesized["memories"]
                     if m["kind"] == "table")
    sram_bits = sum(m["bits"] for m in synthesized["memories"] if m["kind"] == "sram")
    t = est["totals"]
    assert t["rom_bits"] == manifest["rom_bits"]["total"] + table_bits
    assert t["logic_mm2"] == pytest.approx(synthesized["transistors"] / n.logic_density.value
                                           / PLACEMENT_UTILIZATION.value / 1e6, rel=1e-12)
    assert t["rom_mm2"] == pytest.approx(t["rom_bits"] * n.rom_bit_area.value
                                         / MEMORY_ARRAY_EFFICIENCY.value / 1e6, rel=1e-12)
    sram_eff = 1 if n.sram_is_macro else MEMORY_ARRAY_EFFICIENCY.value
    assert t["sram_mm2"] == pytest.approx(sram_bits * n.sram_bit_area.value / sram_eff / 1e6,
                                          rel=1e-12)
    assert t["core_mm2"] == pytest.approx(t["logic_mm2"] + t["rom_mm2"] + t["sram_mm2"])
    assert all(r["why"] for r in est["rows"])
    pos0 = manifest["cycles_per_token"]["at_pos"]["0"]
    assert rows["tokens/s at position 0"]["value"] == round(100e6 / pos0, 1)


@pytest.mark.fpga
def test_command_json_deterministic(compiled, synthesized, tmp_path, capsys):
    out, _ = compiled
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    args = _parser().parse_args([str(copy), "--node", "n6", "--json"])
    assert command.run(args) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((copy / "silicon.json").read_text())
    assert printed == written and printed["node"]["name"] == "n6"
    assert not (copy / ".silicon-scratch").exists()
    # a second yosys run (the fixture's) gives the same counts and script
    for key in ("script", "cells", "num_cells", "transistors", "memories"):
        assert printed["synthesis"][key] == synthesized[key]


def test_dir_without_manifest(tmp_path):
    with pytest.raises(ConfigError, match="manifest.json"):
        command.run(_parser().parse_args([str(tmp_path)]))
    with pytest.raises(ConfigError, match=str(tmp_path / "manifest.json")):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"top": "t"}))
    with pytest.raises(ConfigError, match="'files' is missing"):
        read_manifest(tmp_path)


def test_missing_verilog(compiled, tmp_path):
    out, _ = compiled
    shutil.copy(out / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(ConfigError, match="hardwire_top.v: the Verilog"):
        read_manifest(tmp_path)


def test_bad_node_effort_clock(compiled):
    _, manifest = compiled
    syn = {"memories": [], "cells": {}, "num_cells": 0, "transistors": 0, "yosys": "y",
           "effort": "gates"}
    with pytest.raises(ConfigError, match="--node must be one of"):
        estimate(manifest, syn, "n3")
    with pytest.raises(ConfigError, match="--clock-mhz must be a positive"):
        estimate(manifest, syn, "n7", clock_mhz=0)
    with pytest.raises(ConfigError, match="effort must be one of"):
        synthesis_script("t", "t.v", effort="max", stat_path="s", memories_path="m")


def test_parse_memories():
    text = "\n".join([
        "module \\top", "  cell $mem_v2 \\a.rope.table", "    parameter \\SIZE 8",
        "    parameter \\WIDTH 4", "    parameter \\RD_PORTS 1", "    parameter \\WR_PORTS 0",
        "  end", "  cell $mem_v2 \\a.k_mem", "    parameter \\SIZE 16",
        "    parameter \\WIDTH 32'00000000000000000000000000000011",
        "    parameter \\RD_PORTS 1", "    parameter \\WR_PORTS 1", "  end",
        "  cell $mem_v2 \\embed.table", "    parameter \\SIZE 2", "    parameter \\WIDTH 5",
        "    parameter \\RD_PORTS 1", "    parameter \\WR_PORTS 0", "  end",
        "  cell $mem_v2 \\a.swiglu.silu12", "    parameter \\SIZE 256", "    parameter \\WIDTH 8",
        "    parameter \\RD_PORTS 2", "    parameter \\WR_PORTS 0", "  end", "end"])
    mems = {m["name"]: (m["kind"], m["bits"]) for m in parse_memories(text)}
    assert mems == {"a.rope.table": ("table", 32), "a.k_mem": ("sram", 48),
                    "embed.table": ("weights", 10), "a.swiglu.silu12": ("table", 2048)}
