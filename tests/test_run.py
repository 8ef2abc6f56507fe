"""`make run` as a new user runs it, in a copy of the repository's entry points (Makefile, scripts,
Procfile, deploy/) whose .venv is this one: another Redis on the port is refused and left alone;
Ctrl-C (SIGINT to the whole process group, as a terminal sends it) ends everything quietly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from tests.procs import ROOT, environment, wait_until
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import TOKEN


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What `make run` needs of the repository, with this test run's .venv."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Makefile", "Procfile", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)
    for folder in ("scripts", "deploy", "requirements"):
        shutil.copytree(ROOT / folder, copy / folder)
    # The lock files keep their times, so make sees the installed .venv as up to date.
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


def make_run(checkout: Path, **env: str) -> subprocess.Popen[str]:
    """`make run` in its own session (so the test can send the terminal's SIGINT to all of it)."""
    variables = environment(**env)
    return subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=checkout,
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def other_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that `make run` did not start, on a port it is told to use."""
    server = RedisServer(tmp_path / "other")
    server.start()
    yield server
    server.stop()


def test_another_redis_on_the_port_is_refused_and_left_alone(
    checkout: Path, other_redis: RedisServer
) -> None:
    """It used to write into that Redis and shut it down on Ctrl-C."""
    run = make_run(checkout, REDIS_PORT=str(other_redis.port), PORT=str(free_port()), TWILIO_AUTH_TOKEN=TOKEN)
    output, _ = run.communicate(timeout=60)
    assert run.returncode != 0
    assert f"something already listens on 127.0.0.1:{other_redis.port}" in output
    client = other_redis.client()
    assert client.ping()
    assert client.dbsize() == 0
    assert not (checkout / "var").exists()


def test_ctrl_c_stops_everything_quietly(checkout: Path, other_redis: RedisServer) -> None:
    """With deploy/callstate.env.example as its .env (nothing else configured but the ports):
    it runs; then SIGINT to the process group: web, worker and the Redis `make run` started stop,
    make prints no error, nothing is a traceback; a Redis it did not start keeps running."""
    shutil.copy(checkout / "deploy" / "callstate.env.example", checkout / ".env")
    port, redis_port = free_port(), free_port()
    run = make_run(checkout, REDIS_PORT=str(redis_port), PORT=str(port))

    def web_up() -> bool:
        if run.poll() is not None:
            raise AssertionError(f"make run exited {run.returncode}:\n{run.communicate()[0]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(web_up, timeout=60, what="make run's web process")
        ours = redis.Redis(port=redis_port)
        assert ours.info("server")["process_id"] != other_redis.process.pid  # type: ignore[union-attr]
        os.killpg(run.pid, signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert "make: ***" not in output, output
    assert "Traceback" not in output, output
    assert "make run: stopped" in output, output
    with pytest.raises(redis.ConnectionError):
        ours.ping()
    assert other_redis.client().ping()
