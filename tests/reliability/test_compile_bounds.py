"""Configurations that would overflow an accumulator, exceed the ROM or context bound, or ask for
impossible lane counts are refused by ``hardwire compile`` with the bound (exit 2, nothing
written)."""

import re

import pytest
from broken_models import SPEC, seed_models, write_hf
from quant_helpers import random_loaded

from hardwire.cli import main
from hardwire.errors import ConfigError
from hardwire.gen import hardware
from hardwire.gen.hardware import HardwareConfig, check_context, decoder_params
from hardwire.gen.quantize import MAX_INPUTS, quantize

CTX = SPEC["max_seq_len"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(seed_models(tmp_path_factory.mktemp("seeds"))["huggingface"])


def refused(capsys, tmp_path, model, *flags, pattern):
    """Run ``hardwire compile``; check exit 2, the message and that nothing was written."""
    out = tmp_path / "out"
    assert main(["compile", model, *flags, "--out", str(out)]) == 2, flags
    err = capsys.readouterr().err
    assert err.startswith("hardwire compile: error: "), err
    assert re.search(pattern, err.replace("\n", " ")), err
    assert not out.exists()
    return err


@pytest.mark.parametrize(("flags", "pattern"), [
    (["--lanes", "0"], r"lanes must be a positive integer, not 0"),
    (["--lanes", "-4"], r"lanes must be a positive integer, not -4"),
    (["--lanes", "41"], r"lanes must be an integer from 1 to 40 for .*not 41"),
    (["--lanes", str(1 << 40)], r"lanes must be an integer from 1 to 40 .*not 1099511627776"),
    (["--context", "0"], r"context must be a positive integer, not 0"),
    (["--context", str(CTX + 1)],
     rf"trained context \(max_seq_len\) {CTX}, not {CTX + 1}.*expected <= {CTX}, found {CTX + 1}"),
    (["--context", str(10**6)], rf"expected <= {CTX}, found 1000000"),
    (["--group-size", "0"], r"group_size must be a positive integer, not 0"),
])
def test_command_line_bounds(flags, pattern, model, tmp_path, capsys):
    refused(capsys, tmp_path, model, *flags, pattern=pattern)


def test_lanes_that_are_not_integers(model, tmp_path, capsys):
    for value in ("1.5", "many"):
        with pytest.raises(SystemExit) as info:
            main(["compile", model, "--lanes", value, "--out", str(tmp_path / "out")])
        assert info.value.code == 2
        assert "invalid int value" in capsys.readouterr().err
    config = tmp_path / "hw.yaml"
    config.write_text("lanes: 2.5\n")
    refused(capsys, tmp_path, model, "--config", str(config),
            pattern=r"hw.yaml: lanes must be an integer, not 2.5")
    assert not (tmp_path / "out").exists()


def test_rom_bound(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hardware, "MAX_ROM_BITS", 10_000)
    refused(capsys, tmp_path, model, pattern=r"ROM bits exceed what the compiler builds "
                                            r"\(expected <= 10,000, found [\d,]+\)")


def test_context_bound(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hardware, "MAX_CONTEXT", 8)
    refused(capsys, tmp_path, model, pattern=rf"expected <= 8, found {CTX}")
    refused(capsys, tmp_path, model, "--context", "9", pattern="expected <= 8, found 9")


def test_accumulator_bound_in_the_hardware(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hardware, "MAX_INPUTS", 16)
    refused(capsys, tmp_path, model, pattern=r"embed: 32 inputs overflow the accumulator bound "
                                            r".*\(expected <= 16, found 32\)")


def test_accumulator_bound_on_a_real_file(tmp_path, capsys):
    """A model whose down projection has 2^17 + 1 inputs: ``acc * M`` could pass 2^61."""
    wide = MAX_INPUTS + 1
    write_hf(tmp_path / "wide", random_loaded(0, dim=2, n_layers=1, n_heads=1, n_kv_heads=1,
                                               head_dim=2, ffn_dim=wide, vocab_size=3,
                                               max_seq_len=2))
    (tmp_path / "wide" / "tokenizer.json").unlink()
    refused(capsys, tmp_path, str(tmp_path / "wide"),
            pattern=rf"layers.0.w2.*accumulator bound.*expected at most {MAX_INPUTS}, "
                    rf"found {wide}")


def test_check_context_reads_only_the_spec():
    qm = quantize(random_loaded(1, **SPEC), weights="int8", calibration=[[1, 2, 3]])
    assert check_context(qm.spec) == CTX and check_context(qm.spec, 5) == 5
    with pytest.raises(ConfigError, match=r"^context must be at most the quantized model's "
                                          r"context 4, not 5$"):
        check_context(qm.spec, 5, quantized_context=4)
    with pytest.raises(ConfigError, match=rf"expected <= {CTX}, found {CTX + 1}"):
        decoder_params(qm, HardwareConfig(lanes=2, context=CTX + 1))
    assert hardware.rom_bits(qm, CTX) == sum(qm.rom_bits().values())
    half = SPEC["head_dim"] // 2
    assert hardware.rom_bits(qm, CTX) - hardware.rom_bits(qm, 1) == 2 * 16 * half * (CTX - 1)


def test_huge_declared_context_is_refused_before_quantizing(model, tmp_path, capsys):
    """A valid model declaring 2^24 positions: refused by the context bound, not after building
    2^24-row RoPE tables (over 1 GiB)."""
    import json
    import shutil

    from broken_models import guarded
    copy = tmp_path / "long"
    shutil.copytree(model, copy)
    config = json.loads((copy / "config.json").read_text())
    config["max_position_embeddings"] = 1 << 24
    (copy / "config.json").write_text(json.dumps(config))
    outcome = guarded(main, ["compile", str(copy), "--out", str(tmp_path / "out")], seconds=30)
    assert outcome.error is None and outcome.result == 2, outcome.error
    assert f"expected <= {hardware.MAX_CONTEXT}, found {1 << 24}" in capsys.readouterr().err
    assert outcome.peak < 64 << 20 and not (tmp_path / "out").exists()
