"""Which multipliers an ECP5 build puts into the device's MULT18X18D blocks.

yosys maps a multiplier into DSP blocks only where the script says so; the others become soft
logic, and soft multipliers are dear: a signed 8 × 8 product costs about 165 LUT4 and 8 CCU2C,
a 17 × 8 one about 334 LUT4. The blocks are few (156 on the LFE5U-85F), so before synthesis
the build counts the blocks of each group of multipliers and shares them out:

- the **wide** multipliers (both operands 9 bits or more, which soft logic would make far
  larger) always get blocks;
- then, in this order, each group whole if it still fits: every row of the MAC array's products
  (:class:`~hardwire.hdl.matvec.MatVec`, ``lanes`` multipliers a row, the cells driving its
  ``mac_row{r}_lane{l}`` signals), then the narrow multipliers (an operand under 9 bits) of
  each of :data:`UNIT_GROUPS` in turn (by the source file of the cell), then those of any other
  **units** (not in ``matvec.py``). A unit at a time, so that one which does not fit leaves
  its blocks to the next rather than the whole lot going to LUTs.

A group that does not fit stays in LUTs and the next one is tried. The count runs yosys' front
end and ``mul2dsp`` alone on the design's RTLIL, a few seconds; the synthesis script then maps
the chosen groups the same way, so the MULT18X18D count nextpnr reports is the one predicted.
"""

import re
import subprocess

from ..errors import ToolchainError

__all__ = ["UNIT_GROUPS", "groups_of", "selection", "mapping_script", "count_script",
           "parse_counts", "choose", "describe", "allocate"]

_TECHMAP = "techmap -map +/mul2dsp.v -map +/lattice/dsp_map_18x18.v -D DSP_NAME=$__MUL18X18"
_NARROW = "t:$mul r:A_WIDTH<9 r:B_WIDTH<9 %u %i"
COUNTS_FILE = "dsp_counts.txt"
_ROW = re.compile(r"mac_row(\d+)_lane")

#: The units (``hdl/<name>.py``) whose narrow multipliers are offered blocks one unit at a time,
#: after the MAC array's rows: the attention's products (``q·k``, ``p·v``; the most LUTs a
#: block saves), RoPE's, SwiGLU's and the embedding's.
UNIT_GROUPS = ("attention", "rope", "swiglu", "embedding")


def _source(unit):
    return f"a:src=*/{unit}.py:*"


def groups_of(rtlil_text):
    """The narrow groups of a design, in the order they are offered blocks: ``mac_row0``, …
    (one per row of the MAC array that the RTLIL names), the :data:`UNIT_GROUPS` whose source
    file the RTLIL names, then ``units`` (the rest)."""
    rows = sorted({int(n) for n in _ROW.findall(rtlil_text)})
    units = [u for u in UNIT_GROUPS if f"/{u}.py:" in rtlil_text]
    return [f"mac_row{r}" for r in rows] + units + ["units"]


def selection(group):
    """The yosys selection of ``group``'s multipliers."""
    if group in UNIT_GROUPS:
        return f"{_NARROW} {_source(group)} %i"
    if group == "units":
        return " ".join([_NARROW, *(f"{_source(u)} %d" for u in ("matvec", *UNIT_GROUPS))])
    row = re.fullmatch(r"mac_row(\d+)", group)
    if row is None:
        raise ValueError(f"unknown multiplier group {group!r}")
    return f"w:*mac_row{row.group(1)}_lane* %ci1 t:$mul %i"


def _techmap(min_width, selection=""):
    widths = " ".join(f"-D DSP_{ab}_{what}WIDTH={n}" for ab in "AB"
                      for what, n in (("MAX", 18), ("MIN", min_width)))
    return f"{_TECHMAP} {widths} {selection}".rstrip()


def mapping_script(groups):
    """yosys commands, after ``wreduce t:$mul`` on the flattened design, that map the
    multipliers of ``groups`` and the wide ones into MULT18X18D blocks, the rest into LUTs."""
    lines = [_techmap(2, selection(group)) for group in groups]
    # mul2dsp leaves what it does not take as $__soft_mul; synth_ecp5 -nodsp wants them $mul.
    lines += [_techmap(9), "chtype -set $mul t:$__soft_mul"]
    return "\n".join(lines)


def count_script(rtlil, groups):
    """A yosys script that reads ``rtlil`` and writes :data:`COUNTS_FILE`: the blocks in use
    after mapping each of ``groups`` in turn, then the wide ones (``N objects.`` lines)."""
    lines = [f"read_rtlil {rtlil}", "proc", "flatten", "opt_expr", "opt_clean", "wreduce t:$mul"]
    for k, group in enumerate([*groups, None]):
        lines += [_techmap(9) if group is None else _techmap(2, selection(group)),
                  f"tee -q {'-o' if k == 0 else '-a'} {COUNTS_FILE} select -count t:MULT18X18D"]
    return "\n".join(lines) + "\n"


def parse_counts(text, groups):
    """``{group: blocks}`` for ``groups`` and ``"wide"``, from :data:`COUNTS_FILE`'s text."""
    found = [int(n) for n in re.findall(r"^(\d+) objects", text, re.MULTILINE)]
    if len(found) != len(groups) + 1:
        raise ToolchainError(f"yosys wrote an unexpected {COUNTS_FILE}: {text!r}")
    steps = [b - a for a, b in zip([0, *found], found, strict=False)]
    return {**dict(zip(groups, steps, strict=False)), "wide": steps[-1]}


def choose(counts, groups, available):
    """The groups that get blocks (each whole, in order, while they fit beside the wide ones)
    and the blocks they all take: ``(groups taken, blocks)``."""
    used, taken = counts["wide"], []
    for group in groups:
        if used + counts[group] <= available:
            taken.append(group)
            used += counts[group]
    return taken, used


def describe(choice):
    """One line for a terminal: what went into the DSP blocks, how many they are, and which
    groups that have multipliers stayed in LUTs."""
    taken = ["the wide multipliers"]
    rows = [g for g in choice["groups"] if g.startswith("mac_row")]
    all_rows = [g for g in choice["counts"] if g.startswith("mac_row")]
    if rows:
        taken.append("the MAC array's products" if rows == all_rows else
                     f"{len(rows)} of the MAC array's {len(all_rows)} rows of products")
    units = [g if g != "units" else "the other units" for g in choice["groups"]
             if not g.startswith("mac_row") and choice["counts"][g]]
    if units:
        taken.append(f"the narrow multipliers of {', '.join(units)}")
    soft = [g for g, n in choice["counts"].items()
            if g != "wide" and n and g not in choice["groups"]]
    tail = f"; in LUTs: {', '.join(soft)}" if soft else "; every multiplier has one"
    return (f"DSP blocks: {', '.join(taken)} ({choice['blocks']} of "
            f"{choice['available']}){tail}")


def allocate(build_dir, rtlil, yosys, available):
    """Count the blocks of every group of ``build_dir / rtlil`` with the ``yosys`` program and
    share out ``available`` blocks. Returns ``{"groups", "blocks", "available", "counts"}``
    (``groups``: those in blocks; ``counts``: the blocks of every group and of the wide ones)."""
    groups = groups_of((build_dir / rtlil).read_text(errors="replace"))
    (build_dir / "dsp_count.ys").write_text(count_script(rtlil, groups))
    proc = subprocess.run([yosys, "-q", "-s", "dsp_count.ys"], cwd=build_dir,
                          capture_output=True, text=True)
    counts_file = build_dir / COUNTS_FILE
    if proc.returncode != 0 or not counts_file.is_file():
        raise ToolchainError(f"yosys could not count the DSP blocks of {build_dir / rtlil} "
                             f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    counts = parse_counts(counts_file.read_text(), groups)
    taken, blocks = choose(counts, groups, available)
    return {"groups": taken, "blocks": blocks, "available": available, "counts": counts}
