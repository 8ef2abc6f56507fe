"""Run the Procfile's real processes (``callstate web``, ``callstate worker``) for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def procfile() -> dict[str, list[str]]:
    """Process type -> argv, read from the repository's Procfile."""
    commands: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            commands[name.strip()] = shlex.split(command)
    return commands


def environment(**overrides: str) -> dict[str, str]:
    """The test's environment for a child: the venv first on PATH, JSON logs."""
    # Nothing of the developer's own configuration: no real Twilio credentials, no settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CALLSTATE_", "TWILIO_"))
        and key not in ("REDIS_URL", "SECRET_KEY", "PUBLIC_BASE_URL")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # This checkout's code, whatever the working directory (children run outside the repository,
    # so that no .env of the developer's reaches them) and whatever state the editable install is in.
    env["PYTHONPATH"] = str(ROOT)
    env["LOG_FORMAT"] = "json"
    env.update(overrides)
    return env


@functools.cache
def quiet_dir() -> Path:
    """An empty directory for one-shot commands: every callstate command reads ./.env, and a
    developer's .env in the repository must not reach the tests (nor may a directory named like a
    package shadow one: ``python -m`` puts the working directory first on sys.path)."""
    return Path(tempfile.mkdtemp(prefix="callstate-tests-"))


def callstate(*args: str, cwd: Path | str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m callstate ARGS`` run to completion in ``cwd`` (default :func:`quiet_dir`), in
    the test's environment."""
    command = procfile()["release"][:-1]  # python -m callstate
    return subprocess.run(
        [*command, *args],
        env=environment(**env),
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd if cwd is not None else quiet_dir(),
    )


def wait_until(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds (no fixed sleeps).

    The default is generous on purpose: starting a Python process on a busy 2-core CI machine can
    take seconds, and the deadline only bounds how long a real failure takes to report."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def eventually(
    predicate: Callable[[], object], what: str, timeout: float = 30, poll: float = 0.01
) -> None:
    """:func:`wait_until` inside an event loop: poll ``predicate`` (cheap, run in the loop) every
    ``poll`` seconds, letting other tasks run, until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(poll)


class Process:
    """One child process with its output in a log file under ``directory``."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], directory: Path) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        self._log = self.log_path.open("wb")
        # A session of its own, so that SIGKILL can take down the process with its children
        # (RQ's scheduler), as the loss of a machine would.
        self.popen = subprocess.Popen(
            argv,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Not the repository: every callstate command reads ./.env, and a developer's .env
            # must not reach the tests.
            cwd=directory,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.alive():
            if sig == signal.SIGKILL:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        # Nothing the process started may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()
        return code


def start_web(env: Mapping[str, str], directory: Path, port: int, wrapper: Sequence[str] = ()) -> Process:
    """The Procfile's web process, once it answers; ``wrapper`` goes before its command (``prlimit``)."""
    web = Process("web", [*wrapper, *procfile()["web"]], env, directory)

    def ready() -> bool:
        if not web.alive():
            raise AssertionError(f"web exited:\n{web.output()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, what="the web process")
    return web


def start_worker(env: Mapping[str, str], directory: Path, name: str = "worker") -> Process:
    worker = Process(name, procfile()["worker"], env, directory)
    wait_until(lambda: '"worker_start"' in worker.output() or not worker.alive(), what="worker")
    if not worker.alive():
        raise AssertionError(f"worker exited:\n{worker.output()}")
    return worker
