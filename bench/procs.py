"""The bench's child processes: pinned to a core, logged to a file, measured in CPU time, always stopped.

Every process the bench starts goes through :class:`Child`, which registers it so that
:func:`stop_all` (called by the driver's ``finally``, at exit, and on SIGTERM) stops whatever is
still running, and asks the kernel to send the child SIGTERM if the bench dies without cleaning up.
CPU time is read from ``/proc/<pid>/stat`` over the whole process tree (uvicorn or gunicorn workers
included), so it can be sampled around a load run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG: Final = 1

_children: list[Child] = []


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench dies (kept across exec by Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stat(pid: int) -> tuple[int, list[str]] | None:
    """(parent pid, fields after the command name) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its live descendants and the children they have reaped."""
    stats: dict[int, tuple[int, list[str]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    tree = {pid}
    grew = True
    while grew:
        found = {child for child, (parent, _) in stats.items() if parent in tree} - tree
        grew = bool(found)
        tree |= found
    ticks = 0
    for member in tree:
        if member in stats:
            fields = stats[member][1]
            # Fields 14-17 of proc(5): utime, stime, cutime, cstime; here offset by the 3 skipped.
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """One child process (and its own process group), its output in ``<log_dir>/<name>.log``.

    ``core`` pins it (and everything it forks) to one CPU with ``taskset``; ``None`` leaves it to the
    scheduler.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        core: int | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = ["taskset", "-c", str(core), *argv] if core is not None else list(argv)
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                command,
                env=dict(env),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run when the bench forks
            )
        _children.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu(self) -> float:
        """CPU seconds used so far by the process tree."""
        return cpu_seconds(self.pid)

    def wait_exit(self, timeout: float) -> float:
        """Wait for the process to exit by itself; return its CPU seconds, the children it reaped
        included (``TimeoutError`` after ``timeout`` seconds, the process left running)."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                _children.remove(self)
                return usage.ru_utime + usage.ru_stime
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout:.0f}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM to the process group, SIGKILL after ``timeout``; the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            code = self.popen.wait()
        if self in _children:
            _children.remove(self)
        return code


def stop_all() -> None:
    """Stop every child still running, newest first."""
    for child in reversed(list(_children)):
        child.stop(timeout=10)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def http_ready(port: int) -> bool:
    """True once something on 127.0.0.1:``port`` answers an HTTP request (any status)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def wait_http(child: Child, port: int, timeout: float = 30) -> None:
    """Wait until ``child`` serves HTTP on ``port``; fail with its log if it exits first."""

    def ready() -> bool:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.output()[-3000:]}")
        return http_ready(port)

    wait_until(ready, timeout, f"{child.name} to listen on port {port}")
