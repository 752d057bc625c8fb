"""A compiler wrapper that shares Verilator's run-time library objects between builds.

Every Verilator model compiles the same ``verilated*.cpp`` run-time files (about 11 s of CPU
here) next to a second or two of design code. Verilator's makefiles prefix each compile with
``$(OBJCACHE)`` (meant for ccache); :func:`hardwire.sim.verilator.build_verilator` sets it to
``python -m hardwire.sim.objcache`` with ``HARDWIRE_OBJCACHE_DIR`` naming a cache folder.

Only sources inside Verilator's own ``include/`` folder are cached: they never include design
headers, so the key (the whole command line except the output name, the source text and the
Verilator version in ``HARDWIRE_OBJCACHE_KEY``) determines the object. Everything else, including
cocotb's ``verilator.cpp`` (it includes the design's ``Vtop.h``), is compiled as usual.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]

DIR_ENV = "HARDWIRE_OBJCACHE_DIR"
KEY_ENV = "HARDWIRE_OBJCACHE_KEY"


def _cacheable(argv, include_dir):
    if "-c" not in argv or "-o" not in argv:
        return None
    out = argv[argv.index("-o") + 1]
    sources = [a for a in argv if a.endswith(".cpp")]
    if len(sources) != 1:
        return None
    source = Path(sources[0]).resolve()
    if include_dir is None or source.parent != include_dir:
        return None
    return out, source


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cache = os.environ.get(DIR_ENV)
    root = os.environ.get("VERILATOR_ROOT")
    include_dir = Path(root, "include").resolve() if root else None
    target = _cacheable(argv, include_dir) if cache else None
    if target is None:
        return subprocess.call(argv)

    out, source = target
    at = argv.index("-o")
    key = hashlib.sha256("\0".join([
        os.environ.get(KEY_ENV, ""), *argv[:at], *argv[at + 2:],
        hashlib.sha256(source.read_bytes()).hexdigest()]).encode()).hexdigest()[:24]
    cached = Path(cache, f"{source.stem}-{key}.o")
    if cached.is_file():
        shutil.copyfile(cached, out)
        return 0
    status = subprocess.call(argv)
    if status == 0:
        Path(cache).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        os.close(fd)
        shutil.copyfile(out, tmp)
        os.replace(tmp, cached)   # atomic: concurrent builds never see half an object
    return status


if __name__ == "__main__":
    sys.exit(main())
