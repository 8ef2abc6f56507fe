"""The Procfile's real processes: signed callbacks over HTTP in, reconciled state out."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx2 as httpx
import redis

from tests import storedcall
from tests.procs import environment, procfile, start_web, start_worker, wait_until
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import ACCOUNT, TOKEN, call_params, call_sid, form_request

SECRET = "end-to-end-secret-key-0123456789abcdefghij"


def test_out_of_order_callbacks_are_reconciled_and_readable(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Callbacks posted out of order and twice through `web`, drained by `worker`, read back
    through GET /calls/{sid} with a token printed by `callstate token`."""
    port = free_port()
    env = environment(PORT=str(port), REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN=TOKEN, SECRET_KEY=SECRET)
    web = start_web(env, tmp_path, port)
    worker = start_worker(env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        sid = call_sid(0xE2E)
        progress = [
            call_params(sid, "initiated", 0),
            call_params(sid, "ringing", 1),
            call_params(sid, "in-progress", 2),
            call_params(sid, "completed", 3, CallDuration="42", SipResponseCode="200"),
        ]
        recording = [
            ("AccountSid", ACCOUNT),
            ("CallSid", sid),
            ("RecordingSid", "RE" + "e" * 32),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "14"),
            ("RecordingChannels", "2"),
            ("RecordingSource", "OutboundAPI"),
            ("RecordingUrl", "https://api.twilio.com/recordings/RE" + "e" * 32),
        ]
        with httpx.Client(base_url=base) as client:
            # The recording first, then the terminal event, then the rest, one of them twice.
            deliveries = [
                ("/twilio/recording-status", recording),
                ("/twilio/call-status", progress[3]),
                ("/twilio/call-status", progress[1]),
                ("/twilio/call-status", progress[0]),
                ("/twilio/call-status", progress[1]),
                ("/twilio/call-status", progress[2]),
            ]
            for path, params in deliveries:
                body, headers = form_request(base + path, params)
                assert client.post(path, content=body, headers=headers).status_code == 204

            token = subprocess.run(
                [*procfile()["web"][:-1], "token", "--ttl", "600"],
                env=env,
                capture_output=True,
                check=True,
                text=True,
            ).stdout.strip()
            auth = {"authorization": f"Bearer {token}"}

            def reconciled() -> bool:
                response = client.get(f"/calls/{sid}", headers=auth)
                return response.status_code == 200 and len(response.json()["events"]) == 4

            wait_until(reconciled, what="the call to be reconciled")
            state = client.get(f"/calls/{sid}", headers=auth).json()
            assert client.get(f"/calls/{sid}").status_code == 401
            listed = client.get("/calls?final=true", headers=auth).json()["calls"]
    finally:
        web_code, worker_code = web.stop(), worker.stop()

    assert state["status"] == "completed"
    assert state["final"] is True
    assert state["duration"] == 42
    assert state["sip_response_code"] == 200
    assert state["sequence_number"] == 3
    assert [e["status"] for e in state["events"]] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [(r["status"], r["duration"]) for r in state["recordings"]] == [("completed", 14)]
    assert [c["sid"] for c in listed] == [sid]
    # The API serves the bytes the workers stored for dashboards.
    assert storedcall.state(redis_client, sid) == state
    # Both processes stopped cleanly on SIGTERM (uvicorn re-raises the signal once it has shut
    # down gracefully, so its status is -SIGTERM), and neither logged a phone number or a token.
    assert web_code in (0, -signal.SIGTERM)
    assert worker_code == 0
    logs = web.output() + worker.output()
    assert '"call_sid":"' + sid + '"' in logs
    assert "+1500555" not in logs
    assert TOKEN not in logs
