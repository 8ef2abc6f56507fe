"""Optional profiles (``--profile``): py-spy samples a process during a measured run.

The raw output (collapsed stacks, one ``frame;frame;... count`` line per distinct stack) is kept in
the output directory, next to a summary of the functions with the most samples on top of the stack
(self) and anywhere on it (inclusive): what the report quotes as profile evidence. py-spy runs on the
load generator's core and in non-blocking mode, so the profiled process is slowed as little as
possible; the numbers of a profiled run are still not the headline numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child

_RATE = 200  # samples per second


@dataclass(slots=True)
class Profile:
    """One running py-spy; :meth:`finish` waits for it and writes the summary."""

    process: subprocess.Popen[bytes]
    raw: Path
    summary: Path

    def finish(self, timeout: float = 60) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.raw.exists():
            self.summary.write_text(summarize(self.raw))


class Profiler:
    """Starts py-spy on processes, writing into ``directory``."""

    def __init__(self, directory: Path, core: int | None) -> None:
        binary = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        if binary is None:
            raise RuntimeError("py-spy is not installed (requirements/bench.txt)")
        self.binary = binary
        self.directory = directory
        self.core = core

    def start(self, child: Child, name: str, seconds: float, *, gil_only: bool = False) -> Profile:
        """Sample ``child`` for ``seconds``. ``gil_only`` keeps only samples of the thread holding
        the GIL (where the Python CPU goes); otherwise every thread's stack is sampled, waits
        included (where the wall-clock time goes)."""
        raw = self.directory / f"profile-{name}.txt"
        argv = [self.binary, "record", "--pid", str(child.pid), "--rate", str(_RATE)]
        if gil_only:
            argv.append("--gil")
        argv += ["--duration", str(max(1, int(seconds))), "--format", "raw", "--nonblocking"]
        argv += ["--output", str(raw)]
        if self.core is not None:
            argv = ["taskset", "-c", str(self.core), *argv]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Profile(process, raw, self.directory / f"profile-{name}.summary.txt")


def _function(frame: str) -> str:
    """``name (path/to/module.py:line)`` -> ``name (module.py)``: one row per function."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})" if module else name


def summarize(raw: Path, top: int = 25) -> str:
    """The functions with the most samples, self and inclusive, as percentages of all samples."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for function in set(frames):
            inclusive[function] += count
    lines = [f"{total} samples", "", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in self_counts.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
