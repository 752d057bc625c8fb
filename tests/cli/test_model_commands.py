"""The model commands end to end through ``hardwire.cli.main``: outputs, JSON, and exit code 2."""

import hashlib
import json

import pytest

from hardwire.cli import main
from hardwire.gen.frontends import load_model
from hardwire.gen.quantize import quantize
from hardwire.sim.golden import GoldenModel
from hardwire.sim.reference import FloatModel

MODEL = "kjv-micro"


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def micro():
    return load_model(MODEL)


def test_run_golden_tokens_equal_the_golden_model(capsys, micro):
    out = _json(capsys, ["run", MODEL, "--prompt", "And the LORD said", "-n", "12", "--json"])
    prompt = [int(i) for i in micro.tokenizer.encode("And the LORD said")]
    expected = GoldenModel(quantize(micro, weights="int8")).generate(prompt, 12)
    assert out["prompt_tokens"] == prompt
    assert out["tokens"] == expected and len(expected) == 12
    assert out["text"] == micro.tokenizer.decode(expected)


def test_run_float_with_token_ids(capsys, micro):
    out = _json(capsys, ["run", MODEL, "--tokens", "5,6,7", "-n", "5", "--engine", "float",
                         "--json"])
    assert out["tokens"] == FloatModel(micro).generate([5, 6, 7], 5)


def test_run_refuses_token_outside_vocabulary(capsys):
    assert main(["run", MODEL, "--tokens", "1,99999", "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "99999" in err and "vocabulary" in err and "Traceback" not in err


def test_run_refuses_missing_model(capsys):
    assert main(["run", "no/such/model.gguf", "--tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert "no/such/model.gguf" in err and "bundled" in err


def test_inspect_reports_every_tensor(capsys, micro):
    out = _json(capsys, ["inspect", MODEL, "--weights", "int4", "--group-size", "16", "--json"])
    assert out["params"] == micro.spec.n_params
    assert [t["name"] for t in out["tensors"]][0] == "embed"
    wq = next(t for t in out["tensors"] if t["name"] == "layers.0.wq")
    assert wq["weight_bits"] == 4 and wq["group_size"] == 16
    assert out["rom_bits"]["total"] == out["rom_bits"]["tensors"] + out["rom_bits"]["tables"]


def test_quality_table_per_format(capsys):
    out = _json(capsys, ["quality", MODEL, "--formats", "int8,ternary", "--max-tokens", "120",
                         "--json"])
    rows = {r["weights"]: r for r in out["results"]}
    assert set(rows) == {"int8", "ternary"} and rows["int8"]["tokens"] == 120
    assert rows["int8"]["float_cross_entropy"] == rows["ternary"]["float_cross_entropy"]
    assert abs(rows["int8"]["delta_nats"]) < abs(rows["ternary"]["delta_nats"])


def test_quality_refuses_unknown_format(capsys):
    assert main(["quality", MODEL, "--formats", "int3"]) == 2
    assert "int3" in capsys.readouterr().err


def test_emit_is_deterministic_and_checks_lanes(tmp_path, capsys):
    digests = []
    for sub in ("a", "b"):
        assert main(["emit", "matvec", MODEL, "--tensor", "layers.1.wk", "--lanes", "4",
                     "--out", str(tmp_path / sub)]) == 0
        text = (tmp_path / sub / "matvec_layers_1_wk.v").read_bytes()
        assert b"module matvec_layers_1_wk" in text and str(tmp_path).encode() not in text
        digests.append(hashlib.sha256(text).hexdigest())
    assert digests[0] == digests[1]
    assert main(["emit", "matvec", MODEL, "--lanes", "0", "--out", str(tmp_path / "c")]) == 2
    assert "lanes" in capsys.readouterr().err


def test_verify_waves_writes_an_fst(tmp_path, verilator_cache, capsys):
    # The FST writer needs lz4: built once into the venv where the system lacks lz4.h.
    from quant_helpers import random_loaded

    from hardwire.gen.native import save_native
    qm = quantize(random_loaded(7, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8,
                                ffn_dim=32, vocab_size=19, max_seq_len=24), weights="int8")
    save_native(qm, tmp_path / "tiny.hwq")
    assert main(["verify", str(tmp_path / "tiny.hwq"), "--lanes", "4", "--tokens", "1,2,3",
                 "-n", "4", "--waves", "--build-dir", str(tmp_path / "v"),
                 "--cache", str(verilator_cache)]) == 0
    fst = tmp_path / "v" / "run" / "dump.fst"
    assert f"waveform: {fst}" in capsys.readouterr().out
    header = fst.read_bytes()[:9]
    # FST block 0 is the header block (FST_BL_HDR) of 329 bytes, length big-endian.
    assert header[0] == 0 and int.from_bytes(header[1:9], "big") == 329
