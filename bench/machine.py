"""What the bench ran on: cores, CPU model, kernel, load, and the versions of what it measured."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "redis", "rq", "twilio", "flask", "gunicorn")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (all cores, idle excluded)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is work.
    ticks = sum(int(value) for index, value in enumerate(fields[:8]) if index not in (3, 4))
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def describe(redis_version: str) -> dict[str, str]:
    """The machine and versions, for the report."""
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis-server": redis_version,
        "wrk": (wrk.stdout or wrk.stderr).split(" [", 1)[0].removeprefix("wrk ").strip(),
    }
    info.update({package: _version(package) for package in PACKAGES})
    return info
