"""The benchmark record as files: ``<date>-<host>.json``, a markdown table per section and plots
(PNG, matplotlib's Agg backend) beside them."""

import json
from pathlib import Path

__all__ = ["write_record", "markdown", "plots"]


def _f(value, digits=0):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


def _spread(s):
    digits = 0 if s["median"] >= 100 else 2
    return f"{_f(s['median'], digits)} ({_f(s['min'], digits)}–{_f(s['max'], digits)})"


def _cell(text, width=100):
    line = str(text).splitlines()[0] if text else ""
    return (line if len(line) <= width else line[:width - 1] + "…").replace("|", "\\|")


def _resource(r):
    used = f"{r['used']:,}" + ("" if r["available"] is None else f" / {r['available']:,}")
    return f"**{used} (over by {r['over']:,})**" if r["over"] else used


def _three(values, digits=0):
    return " / ".join(_f(float(values[k]), digits) for k in ("pos0", "mean", "last")) \
        if values else "-"


def _fpga_markdown(record):
    from .fpga import best_point
    f = record["fpga"]
    clock = "the oscillator" if f["clock_mhz"] is None else f"{f['clock_mhz']:g} MHz"
    title = [f"## FPGA ({f['board']}{', ' + f['device'] if f.get('device') else ''}; clock "
             f"{clock})", ""]
    points = f["points"]
    labels = next((([r["resource"] for r in p["resources"]]) for p in points
                   if "resources" in p), [])
    rows = []
    for p in points:
        if "error" in p:
            rows.append([p["lanes"], f"error: {_cell(p['error'])}",
                         *["-"] * (len(labels) + 6)])
            continue
        times = p["times_s"]
        rows.append([p["lanes"], "yes" if p["fits"] else "**no**",
                     *(_resource(r) for r in p["resources"]),
                     _f(p["fmax_mhz"], 1), "-" if p["fmax_mhz"] is None else str(p["met"]),
                     _three(p["cycles_per_token"]), _three(p["tokens_per_s_at_fmax"]),
                     _f(times.get("synthesis"), 0), _f(times.get("place_and_route"), 0)])
    out = [*title, _table(["lanes", "fits", *labels, "Fmax MHz", "clock met",
                           "cycles/token (pos 0 / mean / last)",
                           "tokens/s per user at Fmax (pos 0 / mean / last)",
                           "synthesis s", "place & route s"], rows), ""]
    best = best_point(points)
    if best is None:
        return out
    out += [f"Limits at lanes {best['lanes']}:", "", *(f"- {line}" for line in best["limits"]),
            ""]
    if record.get("peers", {}).get("runs"):
        peers = record["peers"]
        run = max(peers["runs"], key=lambda r: r["decode_tokens_per_s"]["median"])
        theirs = run["decode_tokens_per_s"]["median"]
        ours = best["tokens_per_s_at_fmax"]
        name = f"hardwire on {f['board']}, lanes {best['lanes']} at Fmax {best['fmax_mhz']:.1f} MHz"
        out += [f"### Against {peers['peer']} (tokens/s per user)", "", _table(
            ["engine", "tokens/s per user", "× llama.cpp"],
            [[f"{peers['peer']} {peers['version']} on this CPU ({run['threads']} thread"
              f"{'s' if run['threads'] != 1 else ''}, {run['kv_cache']} KV cache, median)",
              _f(float(theirs)), "1"],
             [f"{name}, position 0", _f(float(ours["pos0"])), f"{ours['pos0'] / theirs:.3g}"],
             [f"{name}, mean over the context", _f(float(ours["mean"])),
              f"{ours['mean'] / theirs:.3g}"]]), ""]
    return out


def markdown(record):
    """The record as markdown: one table per section that ran, failures named."""
    m = record["machine"]
    out = [f"# hardwire bench: {record['model']} ({record['params']:,} parameters)", "",
           f"{record['date']} on {m['host']}: {m['cpu']}, {m['cores']} cores, Python "
           f"{m['python']}; " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
           "", "Figures: median (min–max) over the repeats stated.", ""]
    if record.get("measured_at"):
        out += ["Sections measured at: " + ", ".join(
            f"{section} {when}" for section, when in record["measured_at"].items()), ""]
    if "engines" in record:
        out += ["## Engines (tokens/s, one run)", "", _table(
            ["engine", "tokens/s", "× float", "note"],
            [[name, _spread(e["tokens_per_s"]), f"{e['ratio_to_float']:.3g}",
              (f"{_spread(e['cycles_per_s'])} cycles/s, token-exact {e['token_exact']}"
               if "cycles_per_s" in e else "")]
             for name, e in record["engines"].items()]), ""]
    if "lanes" in record:
        rows = [[p["lanes"], f"{p['measured_cycles_per_token']:,.0f}",
                 f"{p['estimated_cycles_per_token']:,.0f}", f"{p['ideal_cycles_per_token']:,.0f}",
                 f"{p['measured_over_estimate']:.3f}", f"{p['estimate_over_ideal']:.2f}",
                 _f(p.get("logic_transistors")), str(p["token_exact"]),
                 f"{p['sim_cycles_per_s']:,.0f}"] for p in record["lanes"]]
        out += ["## Cycles per token against lanes (Verilator)", "", _table(
            ["lanes", "measured", "estimate", "ideal (MACs/lanes)", "measured/estimate",
             "estimate/ideal", "logic transistors", "token-exact", "sim cycles/s"], rows), ""]
    if "peers" in record:
        p = record["peers"]
        out += [f"## {p['peer']} {p['version']} on the same model (this CPU, GGUF "
                f"{p['gguf']['dtype']}, greedy from token ids)", "", _table(
                    ["threads", "KV cache", "decode tokens/s per user", "prompt tokens/s"],
                    [[r["threads"], r["kv_cache"], _spread(r["decode_tokens_per_s"]),
                      _spread(r["prompt_tokens_per_s"])] for r in p["runs"]]), "",
                f"Greedy tokens equal to our float model's on every prompt and KV cache type: "
                f"{p['agree']} (largest logit difference "
                f"{max(a['max_logit_diff'] for a in p['agreement']):.2g}).", ""]
    if "scaling" in record:
        rows = []
        for r in record["scaling"]:
            ph = r["phases"]
            rows.append([r["size"], _f(ph.get("quantize", {}).get("params")),
                         _f(ph.get("compile", {}).get("seconds"), 1),
                         _f(ph.get("build", {}).get("seconds"), 1),
                         _f(ph.get("first_token", {}).get("seconds"), 1),
                         _f(r.get("to_first_token_s"), 1),
                         _f(ph.get("first_token", {}).get("cycles_per_s")),
                         _f(r.get("peak_bytes", 0) / 2**30, 2) if r.get("peak_bytes") else "-",
                         r.get("stopped", "finished")])
        out += ["## Tool scaling (int8, one process per size)", "", _table(
            ["size", "parameters", "compile s", "Verilator build s", "first token s",
             "total s", "sim cycles/s", "peak GiB", "outcome"], rows), ""]
    if "quality" in record:
        out += ["## Quality on held-out text", "", _table(
            ["weights", "float nats/tok", "int nats/tok", "Δ nats", "top-1 agree"],
            [[r["weights"] + (f":{r['group_size']}" if r["group_size"] else ""),
              f"{r['float_cross_entropy']:.4f}", f"{r['int_cross_entropy']:.4f}",
              f"{r['delta_nats']:+.4f}", f"{100 * r['top1_agreement']:.1f} %"]
             for r in record["quality"]]), ""]
    if "fpga" in record:
        out += _fpga_markdown(record)
    for section, message in record.get("failed", {}).items():
        out += [f"**{section} failed:** {message}", ""]
    return "\n".join(out)


def plots(record, stem):
    """PNG files ``<stem>-<name>.png`` for the sections that have data; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        path = Path(f"{stem}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(path)

    if record.get("lanes"):
        pts = record["lanes"]
        lanes = [p["lanes"] for p in pts]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(lanes, [p["measured_cycles_per_token"] for p in pts], "o-", label="measured")
        ax.loglog(lanes, [p["estimated_cycles_per_token"] for p in pts], "x--", label="estimate")
        ax.loglog(lanes, [p["ideal_cycles_per_token"] for p in pts], ":", label="MACs / lanes")
        ax.set(xlabel="lanes", ylabel="cycles per token", title=f"{record['model']}: cycles "
               "per token")
        ax.legend()
        save(fig, "lanes")
        sized = [p for p in pts if "logic_transistors" in p]
        if len(sized) >= 2:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.loglog([p["logic_transistors"] for p in sized],
                      [p["measured_cycles_per_token"] for p in sized], "o-")
            for p in sized:
                ax.annotate(str(p["lanes"]), (p["logic_transistors"],
                                              p["measured_cycles_per_token"]))
            ax.set(xlabel="logic transistors (yosys stat -tech cmos, pre-ABC gates)",
                   ylabel="cycles per token", title="area against speed (labels: lanes)")
            save(fig, "pareto")
    done = [r for r in record.get("scaling", []) if r.get("finished")]
    if done:
        fig, ax = plt.subplots(figsize=(6, 4))
        params = [r["params"] for r in done]
        for phase in ("compile", "build", "first_token"):
            ax.loglog(params, [r["phases"][phase]["seconds"] for r in done], "o-", label=phase)
        ax.loglog(params, [r["peak_bytes"] / 2**20 for r in done], "s--", label="peak MiB")
        ax.set(xlabel="parameters", ylabel="seconds (MiB for memory)", title="tool scaling")
        ax.legend()
        save(fig, "scaling")
    if any("resources" in p for p in record.get("fpga", {}).get("points", [])):
        save(_fpga_plot(plt, record), "fpga-pareto")
    if record.get("engines"):
        names = list(record["engines"])
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.barh(names, [record["engines"][n]["tokens_per_s"]["median"] for n in names])
        ax.set_xscale("log")
        ax.set(xlabel="tokens/s (median)", title="engines on this machine")
        save(fig, "engines")
    return written


def _fpga_plot(plt, record):
    """Logic used against cycles per token at position 0 (labels: lanes), and tokens/s per user
    at Fmax against lanes, with llama.cpp's beside them when the record has it."""
    f = record["fpga"]
    pts = [p for p in f["points"] if "resources" in p]
    logic = pts[0]["resources"][0]["resource"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for fits, style, label in ((True, "o", "fits"), (False, "x", "does not fit")):
        these = [p for p in pts if p["fits"] == fits]
        if these:
            left.loglog([p["resources"][0]["used"] for p in these],
                        [p["cycles_per_token"]["pos0"] for p in these], style,
                        color="C0" if fits else "C3", label=label)
    for p in pts:
        left.annotate(f" {p['lanes']}", (p["resources"][0]["used"], p["cycles_per_token"]["pos0"]))
    available = pts[0]["resources"][0]["available"]
    if available:
        left.axvline(available, ls="--", color="grey", label=f"{logic} on the board")
    left.set(xlabel=f"{logic} used (post-route)", ylabel="cycles per token at position 0",
             title=f"{record['model']} on {f['board']}: area against speed (labels: lanes)")
    left.legend()
    built = [p for p in pts if p["tokens_per_s_at_fmax"]]
    if built:
        x = range(len(built))
        for shift, key, label in ((-0.2, "pos0", "position 0"), (0.2, "mean", "mean over context")):
            right.bar([i + shift for i in x], [p["tokens_per_s_at_fmax"][key] for p in built],
                      width=0.4, label=label)
        right.set_xticks(list(x), [str(p["lanes"]) for p in built])
        if record.get("peers", {}).get("runs"):
            best = max(r["decode_tokens_per_s"]["median"] for r in record["peers"]["runs"])
            right.axhline(best, color="C3", ls="--", label=f"{record['peers']['peer']} (this CPU)")
        right.set_yscale("log")
        right.legend()
    else:
        right.text(0.5, 0.5, "no lane count fits", ha="center", transform=right.transAxes)
    right.set(xlabel="lanes", ylabel="tokens/s per user at post-route Fmax",
              title="speed at Fmax")
    return fig


SECTIONS = ("engines", "lanes", "peers", "scaling", "quality", "fpga")


def write_record(record, out_dir):
    """Write ``<date>-<host>.json``, ``.md`` and the plots into ``out_dir``; returns the paths.

    A record already there for the same day, host and model keeps the sections this run did not
    measure (each section's ``measured_at`` says when it was)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{record['date'][:10]}-{record['machine']['host']}"
    json_path = stem.with_suffix(".json")
    measured = {s: record["date"] for s in SECTIONS if s in record}
    if json_path.is_file():
        try:
            earlier = json.loads(json_path.read_text())
        except (OSError, ValueError):
            earlier = {}
        if earlier.get("model") == record["model"]:
            for section in SECTIONS:
                if section not in record and section in earlier:
                    record[section] = earlier[section]
                    measured[section] = earlier.get("measured_at", {}).get(
                        section, earlier.get("date"))
    record["measured_at"] = measured
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(record) + "\n")
    return [json_path, md_path, *plots(record, stem)]
