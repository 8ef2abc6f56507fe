"""The web process's metrics (receiver.monitoring): counting callbacks, writing the counts with
the group commit or the flusher, and GET /metrics behind its token. In-process (Starlette's
TestClient) against the session's real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from callstate import keys
from callstate.counters import Tally
from callstate.jobqueue import make_queue
from callstate.metrics import SIGNATURE_REASONS
from receiver.monitoring import CARRY_INTERVAL, counting_writer, flush_counts_every
from tests.procs import eventually, wait_until
from tests.queued import queued_events
from tests.receiver.test_app import CALL_URL, RECORDING_URL, make_client, post
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import ACCOUNT, call_params, call_sid

__all__ = ["make_client"]  # the fixture, shared with test_app

METRICS_TOKEN = "scrape-me"


def counters(client: redis.Redis) -> dict[str, int]:
    raw = cast(dict[bytes, bytes], client.hgetall(keys.METRICS))
    return {field.decode(): int(value) for field, value in raw.items()}


def recording_params(n: int) -> list[tuple[str, str]]:
    return [
        ("AccountSid", ACCOUNT),
        ("CallSid", call_sid(n)),
        ("RecordingSid", f"RE{n:032x}"),
        ("RecordingStatus", "completed"),
    ]


class TestCallbackCounts:
    def test_each_answer_is_counted_by_endpoint_and_status(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """Known traffic: one count per answer, none twice."""
        client = make_client()
        assert post(client, CALL_URL, call_params(call_sid(1), "ringing", 1)).status_code == 204
        assert post(client, CALL_URL, call_params(call_sid(1), "completed", 2)).status_code == 204
        assert post(client, RECORDING_URL, recording_params(1)).status_code == 204
        assert post(client, CALL_URL, call_params(call_sid(2), "ringing"), token="wrong").status_code == 403
        assert client.post(CALL_URL, content=b"CallSid=x", headers={"content-type": FORM}).status_code == 403
        assert (
            client.post(CALL_URL, content=b"{}", headers={"content-type": "application/json"}).status_code
            == 415
        )
        assert post(client, RECORDING_URL, [("AccountSid", ACCOUNT)]).status_code == 400
        expected = {
            "callbacks:call-status:204": 2,
            "callbacks:recording-status:204": 1,
            "callbacks:call-status:403": 2,
            "callbacks:call-status:415": 1,
            "callbacks:recording-status:400": 1,
            "signature_failures:mismatch": 1,
            "signature_failures:missing": 1,
        }
        # Batches carried some of them; the flusher writes the rest within a second or so.
        wait_until(
            lambda: counters(redis_client) == expected, what=f"{expected} (got {counters(redis_client)})"
        )

    def test_signature_failures_are_counted_by_reason(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """Each kind of bad signature has its own reason label."""
        client = make_client()
        settings = "x-twilio-webhooks-signature-settings"
        refusals: list[tuple[dict[str, str], bytes]] = [
            ({"x-twilio-signature": ""}, b"CallSid=x"),  # missing
            ({"x-twilio-signature": "short"}, b"CallSid=x"),  # malformed
            ({"x-twilio-signature": "A" * 28}, b"CallSid=%FF"),  # undecodable
            ({"x-twilio-signature": "A" * 44, settings: "key=K1,algorithm=HMAC_SHA256"}, b"CallSid=x"),
            ({"x-twilio-signature": "A" * 44, settings: "key=K1,algorithm=HMAC_MD5"}, b"CallSid=x"),
        ]
        for headers, body in refusals:
            response = client.post(CALL_URL, content=body, headers={"content-type": FORM, **headers})
            assert response.status_code == 403
        assert post(client, CALL_URL, call_params(call_sid(2), "ringing"), token="wrong").status_code == 403
        expected = {
            "callbacks:call-status:403": 6,
            **{f"signature_failures:{reason}": 1 for reason in SIGNATURE_REASONS},
        }
        wait_until(lambda: counters(redis_client) == expected, what=f"{expected}")

    def test_refused_while_redis_is_down_counts_when_it_is_back(
        self, make_client: Any, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """503s are counted in memory; the write that failed gave them back, so a later write
        carries them once Redis is back."""
        client = make_client(redis_timeout=0.5)
        redis_server.stop()
        try:
            assert post(client, CALL_URL, call_params(call_sid(1), "ringing")).status_code == 503
        finally:
            redis_server.start()
        expected = {"callbacks:call-status:503": 1}
        wait_until(lambda: counters(redis_server.client()) == expected, what=f"{expected}")


FORM = "application/x-www-form-urlencoded"


class TestWriting:
    def test_a_batch_carries_the_counts_in_its_multi_exec(self, redis_client: redis.Redis) -> None:
        """The group commit's writer adds what was counted to the batch's transaction."""
        tally = Tally()
        tally.add("callbacks:call-status:204", 3)
        write = counting_writer(tally, make_queue(redis_client, "callstate"), timeout=20)
        write([{"kind": "call", "params": []}])
        assert counters(redis_client) == {"callbacks:call-status:204": 3}
        assert len(queued_events(redis_client)) == 1
        assert tally.take() == {}

    def test_batches_carry_counts_at_most_every_carry_interval(self, redis_client: redis.Redis) -> None:
        """A batch right after another carries nothing: the HINCRBYs cost the same at any rate."""
        now = [0.0]
        tally = Tally(clock=lambda: now[0])
        write = counting_writer(tally, make_queue(redis_client, "callstate"), timeout=20)
        now[0] += CARRY_INTERVAL
        tally.add("a")
        write([{"kind": "call", "params": []}])
        tally.add("a")
        write([{"kind": "call", "params": []}])
        assert counters(redis_client) == {"a": 1}
        now[0] += CARRY_INTERVAL
        write([{"kind": "call", "params": []}])
        assert counters(redis_client) == {"a": 2}

    def test_a_failed_batch_gives_its_counts_back(self) -> None:
        """Redis unreachable: the batch fails and its counts wait for the next write."""
        down = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
        tally = Tally()
        tally.add("a", 2)
        write = counting_writer(tally, make_queue(down, "callstate"), timeout=20)
        with pytest.raises(redis.ConnectionError):
            write([{"kind": "call", "params": []}])
        assert tally.take() == {"a": 2}

    def test_the_flusher_writes_counts_no_batch_carried(self, redis_client: redis.Redis) -> None:
        """Refusals come without any enqueue: the flusher writes them on its own."""
        tally = Tally()
        tally.add("callbacks:call-status:403")

        async def scenario() -> None:
            flusher = asyncio.create_task(flush_counts_every(tally, redis_client, interval=0.05))
            try:
                await eventually(lambda: redis_client.exists(keys.METRICS), "the flusher's write", timeout=15)
            finally:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher

        asyncio.run(scenario())
        assert counters(redis_client) == {"callbacks:call-status:403": 1}


class TestEndpoint:
    def test_without_metrics_token_there_is_no_metrics(self, make_client: Any) -> None:
        """METRICS_TOKEN unset: 404, as for any path that does not exist."""
        assert make_client().get("/metrics", headers={"authorization": "Bearer x"}).status_code == 404

    @pytest.mark.parametrize(
        "authorization", [None, "Bearer wrong", f"Basic {METRICS_TOKEN}", METRICS_TOKEN, "Bearer"]
    )
    def test_without_the_right_bearer_token_it_is_401(
        self, make_client: Any, authorization: str | None
    ) -> None:
        """No header, a wrong token, another scheme: 401, and no figure in the answer."""
        headers = {} if authorization is None else {"authorization": authorization}
        response = make_client(metrics_token=METRICS_TOKEN).get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "callstate_" not in response.text

    def test_with_the_token_it_answers_the_prometheus_text(self, make_client: Any) -> None:
        """The right token: 200, Prometheus's text format, every required family."""
        response = make_client(metrics_token=METRICS_TOKEN).get(
            "/metrics", headers={"authorization": f"bearer {METRICS_TOKEN}"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {family.name for family in text_string_to_metric_families(response.text)}
        assert families >= {
            "callstate_callbacks",
            "callstate_signature_failures",
            "callstate_events",
            "callstate_state_changes",
            "callstate_calls",
            "callstate_stuck_calls",
            "callstate_queue_jobs",
            "callstate_queue_oldest_age_seconds",
            "callstate_lag_seconds",
            "callstate_sweep_requests",
        }

    def test_redis_down_is_503(self, make_client: Any) -> None:
        """The figures come from Redis: without it, 503 (never a made-up zero)."""
        client = make_client(
            metrics_token=METRICS_TOKEN, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5
        )
        response = client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert response.status_code == 503
