"""`callstate simulate` against the Procfile's real processes: what a user runs after deploying."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.procs import Process, environment, procfile, start_web, start_worker
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import TOKEN

SECRET = "simulate-secret-key-0123456789abcdefghij"
SHARED_KEY_ID, SHARED_SECRET = "webhooks_sharedkey_sim", "shared-secret-of-the-simulator-0123"


def simulate(port: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = procfile()["release"][:-1]  # python -m callstate
    settings = {"TWILIO_AUTH_TOKEN": TOKEN, "SECRET_KEY": SECRET, **env}
    return subprocess.run(
        [*command, "simulate", "--url", f"http://127.0.0.1:{port}", *args],
        env=environment(**settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


@pytest.fixture
def deployment(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> Iterator[int]:
    """A web process and a worker on the test's Redis; yields the web port."""
    port = free_port()
    env = environment(
        PORT=str(port),
        REDIS_URL=redis_server.url,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_SHARED_KEYS=f"{SHARED_KEY_ID}:{SHARED_SECRET}",
        SECRET_KEY=SECRET,
    )
    processes: list[Process] = [start_web(env, tmp_path, port), start_worker(env, tmp_path)]
    yield port
    for process in processes:
        process.stop()


def test_verify_passes_against_a_working_deployment(deployment: int) -> None:
    """Every callback acknowledged, every call read back as the reducer expects: exit 0."""
    result = simulate(deployment, "--calls", "300", "--duplicates", "0.2", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answers by status (every attempt): 204: " in result.stdout
    assert "300 calls stored as expected, 0 not" in result.stdout


def test_a_seeded_run_replayed_is_only_duplicates(deployment: int) -> None:
    """--seed and --start reproduce a run byte for byte: sent twice, every state stays as expected."""
    args = ("--calls", "100", "--seed", "11", "--start", "2026-11-30T04:00:00Z", "--verify")
    first, again = simulate(deployment, *args), simulate(deployment, *args)
    for result in (first, again):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "100 calls stored as expected, 0 not" in result.stdout
    assert first.stdout.splitlines()[0] == again.stdout.splitlines()[0]


def test_a_wrong_auth_token_is_a_failure_not_a_success(deployment: int) -> None:
    """403s are reported by count with the likely cause, and the exit status is 1."""
    result = simulate(deployment, "--calls", "20", "--verify", TWILIO_AUTH_TOKEN="not-the-token")
    assert result.returncode == 1
    assert "answers by status (every attempt): 403: " in result.stdout
    assert "NOT acknowledged" in result.stdout
    assert "TWILIO_AUTH_TOKEN" in result.stdout


def test_sharedkey_signatures_are_verified_end_to_end(deployment: int) -> None:
    """--shared-key signs with the Webhook SharedKey alone (HMAC-SHA256): the auth token given to
    the simulator is wrong, so every 204 proves the SharedKey path, and every call is stored."""
    result = simulate(
        deployment,
        *("--calls", "50", "--shared-key", SHARED_KEY_ID, "--verify"),
        TWILIO_AUTH_TOKEN="not-the-token",
        TWILIO_SHARED_KEYS=f"{SHARED_KEY_ID}:{SHARED_SECRET}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Only 204s. (Not `"403" not in stdout`: the printed random seed may contain "403".)
    assert re.search(r"^answers by status \(every attempt\): 204: [\d,]+$", result.stdout, re.M), (
        result.stdout
    )
    assert "50 calls stored as expected, 0 not" in result.stdout


def test_a_wrong_sharedkey_is_refused_and_named(deployment: int) -> None:
    result = simulate(
        deployment,
        *("--calls", "5", "--shared-key", SHARED_KEY_ID),
        TWILIO_SHARED_KEYS=f"{SHARED_KEY_ID}:not-the-shared-secret-0123456789",
    )
    assert result.returncode == 1
    assert "the SharedKey webhooks_sharedkey_sim the web process's" in result.stdout


def test_a_wrong_secret_key_fails_verification_clearly(deployment: int) -> None:
    result = simulate(
        deployment, "--calls", "5", "--verify", SECRET_KEY="another-key-0123456789abcdefghijklmnopqrst"
    )
    assert result.returncode == 1
    assert "verify: FAILED: the read API answered 401" in result.stdout


def test_verify_lists_calls_the_store_does_not_have(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """With no worker running the callbacks are acknowledged but never reconciled: each call is
    listed as missing once the deadline passes, and the exit status is 1."""
    port = free_port()
    env = environment(PORT=str(port), REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN=TOKEN, SECRET_KEY=SECRET)
    web = start_web(env, tmp_path, port)
    try:
        result = simulate(port, "--calls", "10", "--verify", "--verify-timeout", "1")
    finally:
        web.stop()
    assert result.returncode == 1
    assert "0 calls stored as expected, 10 not" in result.stdout
    assert result.stdout.count("not stored (404), but callbacks were acknowledged") == 10


def test_missing_settings_are_named() -> None:
    result = simulate(1, "--calls", "1", TWILIO_AUTH_TOKEN="")
    assert result.returncode == 2
    assert "TWILIO_AUTH_TOKEN" in result.stderr
    result = simulate(1, "--calls", "1", "--verify", SECRET_KEY="")
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr
    result = simulate(1, "--calls", "1", "--shared-key", "webhooks_sharedkey_unknown")
    assert result.returncode == 2
    assert "TWILIO_SHARED_KEYS" in result.stderr
    assert "webhooks_sharedkey_unknown" in result.stderr
