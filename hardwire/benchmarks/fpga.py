"""FPGA figures against lanes: the model built for a board (synthesis, place and route with the
YoWASP tools, :func:`hardwire.gen.fpga.build_board`) once per lane count, with what it uses, its
post-route Fmax and the tokens/s per user that Fmax gives, for the area-against-speed Pareto plot.

A lane count that does not fit is a point with its overshoot per resource; one whose tools fail
is a point with its ``error``; the other lane counts still run.
"""

from pathlib import Path

from ..errors import HardwireError

__all__ = ["fpga_sweep", "fpga_point", "best_point"]


def fpga_point(lanes, report):
    """The record of one lane count from a :func:`~hardwire.gen.fpga.build_board` report."""
    clock = report["clock"]
    point = {"lanes": lanes, "fits": report["fits"],
             "resources": [{k: r[k] for k in ("resource", "cell", "used", "available", "over")}
                           for r in report["resources"]],
             "clock_mhz": clock["mhz"], "fmax_mhz": clock["fmax_mhz"], "met": clock["met"],
             "cycles_per_token": report["cycles_per_token"],
             "tokens_per_s_at_fmax": report["tokens_per_s"]["at_fmax"],
             "tokens_per_s_at_clock": report["tokens_per_s"]["at_clock"],
             "times_s": report["times_s"], "limits": report.get("limits", [])}
    if not report["fits"]:
        point["overshoot"] = {r["resource"]: r["over"] for r in report["resources"] if r["over"]}
        if report.get("placement"):
            point["placement"] = report["placement"]
    return point


def best_point(points):
    """The fitting point with the most tokens/s per user at Fmax (mean over the context), or
    ``None``."""
    built = [p for p in points if p.get("tokens_per_s_at_fmax")]
    return max(built, key=lambda p: p["tokens_per_s_at_fmax"]["mean"], default=None)


def fpga_sweep(build, board, lanes, work, *, clock_mhz=None, on_point=None):
    """Build for ``board`` once per lane count in ``lanes``: ``build(lanes, out_dir)`` returns
    the :func:`~hardwire.gen.fpga.build_board` report of the design with that many lanes built
    into ``work/fpga-<lanes>``. Returns ``{"board", "clock_mhz" (asked; None: the oscillator),
    "device", "tools", "points"}``. Each point is :func:`fpga_point`, or ``{"lanes", "error"}``
    when its build raised a :class:`~hardwire.errors.HardwireError`."""
    from ..gen.fpga import fpga_tools

    section = {"board": board.name, "clock_mhz": clock_mhz, "device": None, "tools": None,
               "points": []}
    fpga_tools(board.family)     # a missing tool fails the section (ToolchainError), not a point
    for count in lanes:
        try:
            report = build(count, Path(work) / f"fpga-{count}")
        except HardwireError as exc:
            point = {"lanes": count, "error": str(exc)}
        else:
            point = fpga_point(count, report)
            section["device"] = section["device"] or report.get("device")
            section["tools"] = section["tools"] or report.get("tools")
        section["points"].append(point)
        if on_point:
            on_point(point)
    return section
