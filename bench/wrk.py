"""Closed-loop load with wrk: a corpus file through ``bench/wrk/callbacks.lua``, keep-alive connections.

wrk runs as a child pinned to the load generator's core; its own CPU time comes from ``wait4``, and
its numbers from the JSON line the Lua script's ``done()`` prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.procs import ROOT

SCRIPT: Final = ROOT / "bench" / "wrk" / "callbacks.lua"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured. Latencies in milliseconds."""

    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not on PATH: run `make bench` (scripts/bench installs it)")
    return path


def run_wrk(
    port: int,
    corpus: Path,
    *,
    seconds: float,
    connections: int,
    core: int | None,
    offset: int = 0,
    host: str,
) -> WrkResult:
    """Send ``corpus`` (from line ``offset``, cycling) to 127.0.0.1:``port`` for ``seconds``."""
    argv = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{seconds:.0f}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        str(corpus),
        str(offset),
        host,
    ]
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    # Output goes to files, not pipes: nothing reads a pipe while wait4 waits.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    errors = summary["errors"]
    latency = summary["latency_us"]
    return WrkResult(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        non_2xx=errors["status"],
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        p999_ms=latency["p999"] / 1000,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )
