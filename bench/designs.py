"""The receiver designs the bench compares, and how each one is started.

Four peers from issue 4's table (``bench/peers/``) and callstate itself, run by the ``web`` command
of the ``Procfile`` exactly as deployed (plus ``--host 127.0.0.1``: the bench listens on loopback
only). uvicorn runs the Starlette peers with the same defaults as ``callstate web`` (uvloop,
httptools, one process, no access log).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.corpus import AUTH_TOKEN
from bench.procs import ROOT, Child, free_port, wait_http

BIN: Final = Path(sys.executable).parent

#: gunicorn's process model for the Flask peer: sync Flask views block on Redis, so a few worker
#: processes with threads keep the core busy (all pinned to the server's core).
GUNICORN_WORKERS: Final = 2
GUNICORN_THREADS: Final = 8


def procfile() -> dict[str, list[str]]:
    """Process type -> argv, from the repository's Procfile."""
    commands: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            commands[name.strip()] = shlex.split(command)
    return commands


def environment(redis_url: str, **extra: str) -> dict[str, str]:
    """A child's environment: the venv first on PATH, the repository importable, JSON logs."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLSTATE_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        REDIS_URL=redis_url,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def _uvicorn(app: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            str(BIN / "uvicorn"),
            "--factory",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]

    return argv


def _gunicorn(port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "bench.peers.flask_rq:create_app()",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(GUNICORN_WORKERS),
        "--worker-class",
        "gthread",
        "--threads",
        str(GUNICORN_THREADS),
        "--log-level",
        "warning",
    ]


def _callstate(port: int) -> list[str]:
    return [*procfile()["web"], "--host", "127.0.0.1"]


@dataclass(frozen=True, slots=True)
class Design:
    """One receiver design: a key for files, a label for the table, its command line."""

    key: str
    label: str
    argv: Callable[[int], list[str]]


BARE: Final = Design(
    "bare", "bare Starlette, 204, no work (ceiling)", _uvicorn("bench.peers.bare:create_app")
)
NAIVE: Final = Design(
    "naive_rq",
    "Starlette + request.form() + RequestValidator + RQ enqueue",
    _uvicorn("bench.peers.naive_rq:create_app"),
)
LPUSH: Final = Design(
    "lpush", "Starlette + RequestValidator + async LPUSH", _uvicorn("bench.peers.lpush:create_app")
)
FLASK: Final = Design("flask_rq", "Flask + validator decorator + RQ (gunicorn)", _gunicorn)
CALLSTATE: Final = Design("callstate", "callstate web (Procfile)", _callstate)

DESIGNS: Final = (BARE, NAIVE, LPUSH, FLASK, CALLSTATE)


def start(design: Design, env: Mapping[str, str], log_dir: Path, core: int | None) -> tuple[Child, int]:
    """Start ``design`` on a free port; return once it answers HTTP."""
    port = free_port()
    child = Child(design.key, design.argv(port), env={**env, "PORT": str(port)}, log_dir=log_dir, core=core)
    wait_http(child, port)
    return child, port
