"""GET /metrics for the whole deployment: known traffic through two real web processes and a real
worker (the Procfile's commands), then the same exact figures from either web process, in a text
that prometheus-client's parser and Prometheus's promtool accept, and from `callstate stats`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import Process, environment, procfile, start_web, start_worker, wait_until
from tests.redisserver import RedisServer, free_port
from tests.test_metrics import promtool_check_metrics
from tests.twiliosign import ACCOUNT, call_params, call_sid, form_request

METRICS_TOKEN = "end-to-end-metrics-token"
AUTH = {"authorization": f"Bearer {METRICS_TOKEN}"}

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(base: str) -> dict[Sample, float]:
    """(sample name, sorted labels) -> value, as prometheus-client's parser reads /metrics."""
    response = httpx.get(f"{base}/metrics", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def events_seen(base: str) -> float:
    figures = scrape(base)
    return sum(v for (name, _), v in figures.items() if name == "callstate_events_total")


@pytest.fixture
def deployment(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> Iterator[list[str]]:
    """Two web processes and a worker on the test's Redis; their base URLs."""
    ports = [free_port(), free_port()]
    processes: list[Process] = []
    try:
        for n, port in enumerate(ports):
            env = environment(PORT=str(port), REDIS_URL=redis_server.url, METRICS_TOKEN=METRICS_TOKEN)
            env["TWILIO_AUTH_TOKEN"] = "test-auth-token-0123456789abcdef"
            web_dir = tmp_path / f"web{n}"
            web_dir.mkdir()
            processes.append(start_web(env, web_dir, port))
        processes.append(start_worker(environment(REDIS_URL=redis_server.url), tmp_path))
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.stop()


def test_exact_figures_for_the_whole_deployment_from_either_web_process(
    deployment: list[str], redis_server: RedisServer
) -> None:
    """Each callback goes to one of the two web processes, and the worker applies it before the
    next is sent (so the state changes are known); then both processes report the same exact
    counts, and the gauges of what is in the store."""
    web_a, web_b = deployment
    ca1, ca2 = call_sid(0xA1), call_sid(0xA2)
    recording = [
        ("AccountSid", ACCOUNT),
        ("CallSid", ca1),
        ("RecordingSid", "RE" + "1" * 32),
        ("RecordingStatus", "completed"),
    ]
    accepted = [
        (web_a, "/twilio/call-status", call_params(ca1, "initiated", 0)),
        (web_b, "/twilio/call-status", call_params(ca2, "ringing", 1)),
        (web_a, "/twilio/call-status", call_params(ca1, "ringing", 1)),
        (web_b, "/twilio/call-status", call_params(ca1, "ringing", 1)),  # a redelivery
        (web_a, "/twilio/call-status", call_params(ca1, "completed", 3)),
        (web_b, "/twilio/call-status", call_params(ca2, "in-progress", 2)),
        (web_a, "/twilio/recording-status", recording),
    ]
    for sent, (base, path, params) in enumerate(accepted, start=1):
        body, headers = form_request(base + path, params)
        assert httpx.post(base + path, content=body, headers=headers).status_code == 204
        wait_until(lambda n=sent: events_seen(web_a) == n, what=f"the worker to apply event {sent}")  # type: ignore[misc]
    # Refused: a forgery on each process, and a callback without a signature.
    for base in deployment:
        body, headers = form_request(
            base + "/twilio/call-status", call_params(ca2, "completed", 4), token="x"
        )
        assert httpx.post(base + "/twilio/call-status", content=body, headers=headers).status_code == 403
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert httpx.post(web_b + "/twilio/call-status", content=b"CallSid=x", headers=form).status_code == 403

    def label(name: str, **labels: str) -> Sample:
        return (name, tuple(sorted(labels.items())))

    expected = {
        label("callstate_callbacks_total", endpoint="call-status", code="204"): 6,
        label("callstate_callbacks_total", endpoint="recording-status", code="204"): 1,
        label("callstate_callbacks_total", endpoint="call-status", code="403"): 3,
        label("callstate_signature_failures_total", reason="mismatch"): 2,
        label("callstate_signature_failures_total", reason="missing"): 1,
        label("callstate_signature_failures_total", reason="malformed"): 0,
        label("callstate_events_total", result="new"): 6,
        label("callstate_events_total", result="duplicate"): 1,
        label("callstate_state_changes_total", status="initiated"): 1,
        label("callstate_state_changes_total", status="ringing"): 2,
        label("callstate_state_changes_total", status="in-progress"): 1,
        label("callstate_state_changes_total", status="completed"): 2,  # then its recording
        label("callstate_state_changes_total", status="busy"): 0,
        label("callstate_lag_seconds_count"): 7,
        label("callstate_calls", status="completed"): 1,
        label("callstate_calls", status="in-progress"): 1,
        label("callstate_calls", status="ringing"): 0,
        # CA2 is in progress, and its events carry Twilio times of 2026-09-01: long stuck.
        label("callstate_stuck_calls"): 1,
        label("callstate_queue_jobs", state="queued"): 0,
        label("callstate_queue_jobs", state="failed"): 0,
        label("callstate_queue_oldest_age_seconds"): 0,
        label("callstate_sweep_requests_total", outcome="final"): 0,
    }

    def differences(base: str) -> dict[Sample, tuple[float | None, int]]:
        """Sample -> (scraped, expected), where they differ."""
        figures = scrape(base)
        return {s: (figures.get(s), n) for s, n in expected.items() if figures.get(s) != n}

    # The web processes write what no batch carried within a second or so.
    try:
        wait_until(lambda: not differences(web_a), what="web A's /metrics to show the traffic")
    except AssertionError:
        raise AssertionError(differences(web_a)) from None
    assert differences(web_b) == {}
    figures = scrape(web_b)
    assert figures[label("callstate_lag_seconds_bucket", le="+Inf")] == 7

    text = httpx.get(f"{web_b}/metrics", headers=AUTH).content
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert httpx.get(f"{web_a}/metrics").status_code == 401
    assert httpx.get(f"{web_a}/metrics", headers={"authorization": "Bearer nope"}).status_code == 401

    stats = subprocess.run(
        [*procfile()["web"][:-1], "stats"],
        env=environment(REDIS_URL=redis_server.url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line[:20].strip(): line[20:] for line in stats.splitlines()}
    assert lines["callbacks"] == "call-status 204 6, call-status 403 3, recording-status 204 1"
    assert lines["signature failures"] == "missing 1, mismatch 2"
    assert lines["events"] == "new 6, duplicate 1"
    assert lines["calls now"] == "in-progress 1, completed 1"
    assert lines["lag"].startswith("7 events, mean ")
