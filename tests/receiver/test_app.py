"""The web process in-process (Starlette's TestClient) against the session's real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from callstate.settings import Settings
from receiver.app import create_app
from tests.queued import queued_events
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import (
    ACCOUNT,
    TOKEN,
    call_params,
    call_sid,
    form_request,
    get_url,
    signature,
)

CALL_URL = "http://testserver/twilio/call-status"
RECORDING_URL = "http://testserver/twilio/recording-status"


@pytest.fixture
def make_client(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Any]:
    """A factory of started TestClients; settings default to the test Redis and token."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        options: dict[str, Any] = {"redis_url": redis_server.url, "auth_token": TOKEN}
        options.update(overrides)
        client = TestClient(create_app(Settings(**options)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def post(client: TestClient, url: str, params: list[tuple[str, str]], **kw: Any) -> Any:
    body, headers = form_request(kw.pop("signed_url", url), params, kw.pop("token", TOKEN))
    headers.update(kw.pop("headers", {}))
    return client.post(url, content=body, headers=headers)


class TestFailedJobRetention:
    @pytest.mark.parametrize(("days", "kept"), [(1, 86_400), (30, 14 * 86_400)])
    def test_a_failed_job_is_kept_no_longer_than_the_store_keeps_calls(
        self, make_client: Any, redis_client: redis.Redis, days: int, kept: int
    ) -> None:
        """The job a callback becomes carries RQ's failure_ttl: 14 days, or the retention if
        shorter, since a failed job holds the callback's phone numbers."""
        client = make_client(retention_days=days)
        assert post(client, CALL_URL, call_params(call_sid(1), "ringing")).status_code == 204
        [job_key] = redis_client.keys("rq:job:*")
        assert int(redis_client.hget(job_key, "failure_ttl") or 0) == kept


class TestAccepted:
    def test_signed_post_is_queued_then_answered_204(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """A correctly signed StatusCallback gets 204 and its event is in the queue."""
        params = call_params(call_sid(1), "ringing", 1)
        response = post(make_client(), CALL_URL, params)
        assert response.status_code == 204
        [event] = queued_events(redis_client)
        assert event["kind"] == "call"
        assert ["CallStatus", "ringing"] in event["params"]
        assert event["received_at"] > 0

    def test_signed_get_is_accepted(self, make_client: Any, redis_client: redis.Redis) -> None:
        """A GET callback is verified over the full URL with Twilio's appended parameters."""
        url = get_url(CALL_URL, call_params(call_sid(2), "completed", 3, CallDuration="42"))
        response = make_client().get(url, headers={"x-twilio-signature": signature(url)})
        assert response.status_code == 204
        [event] = queued_events(redis_client)
        assert ["CallDuration", "42"] in event["params"]

    def test_unknown_parameters_and_statuses_are_kept(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """Twilio adds parameters without notice: they are stored, not refused."""
        params = call_params(call_sid(3), "teleported", 2, BrandNewParam="x")
        assert post(make_client(), CALL_URL, params).status_code == 204
        [event] = queued_events(redis_client)
        assert ["BrandNewParam", "x"] in event["params"]

    def test_idempotency_token_is_kept_with_the_event(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """I-Twilio-Idempotency-Token travels with the event."""
        params = call_params(call_sid(4), "ringing", 1)
        headers = {"i-twilio-idempotency-token": "tok-1"}
        assert post(make_client(), CALL_URL, params, headers=headers).status_code == 204
        assert queued_events(redis_client)[0]["idempotency_token"] == "tok-1"

    def test_recording_without_callsid_is_accepted(self, make_client: Any, redis_client: redis.Redis) -> None:
        """A conference recording names no call and is still kept."""
        params = [("AccountSid", ACCOUNT), ("RecordingSid", "RE" + "1" * 32)]
        params.append(("RecordingStatus", "completed"))
        assert post(make_client(), RECORDING_URL, params).status_code == 204
        assert queued_events(redis_client)[0]["kind"] == "recording"


class TestRefused:
    def test_missing_signature_is_403_and_stores_nothing(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """No X-Twilio-Signature: 403 saying so, and nothing queued."""
        response = make_client().post(
            CALL_URL,
            content=b"CallSid=" + call_sid(1).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 403
        assert "missing" in response.text
        assert queued_events(redis_client) == []

    def test_wrong_token_is_403(self, make_client: Any, redis_client: redis.Redis) -> None:
        """A request signed with another token is refused."""
        response = post(make_client(), CALL_URL, call_params(call_sid(1), "ringing"), token="x")
        assert response.status_code == 403
        assert response.text == "signature does not match"
        assert queued_events(redis_client) == []

    def test_body_over_the_limit_is_413(self, make_client: Any) -> None:
        """A body over the limit is refused before anything else is looked at."""
        params = call_params(call_sid(1), "ringing") + [("Pad", "x" * 70_000)]
        assert post(make_client(), CALL_URL, params).status_code == 413

    def test_json_body_is_415(self, make_client: Any) -> None:
        """The callback endpoints take forms only."""
        response = make_client().post(
            CALL_URL, json={"CallSid": call_sid(1)}, headers={"x-twilio-signature": "x"}
        )
        assert response.status_code == 415

    def test_signed_call_status_without_callsid_is_400_naming_it(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """Correctly signed but unusable: 400 naming the field, nothing queued."""
        params = [(k, v) for k, v in call_params(call_sid(1), "ringing") if k != "CallSid"]
        response = post(make_client(), CALL_URL, params)
        assert response.status_code == 400
        assert "CallSid" in response.text
        assert queued_events(redis_client) == []

    def test_signed_malformed_sid_is_400(self, make_client: Any) -> None:
        """A CallSid that is not CA + 32 hex digits is refused."""
        response = post(make_client(), CALL_URL, call_params("CA123", "ringing"))
        assert response.status_code == 400
        assert response.text == "CallSid is malformed"

    def test_recording_without_recordingsid_is_400(self, make_client: Any) -> None:
        """A recording callback must name its recording."""
        params = [("CallSid", call_sid(1)), ("RecordingStatus", "completed")]
        response = post(make_client(), RECORDING_URL, params)
        assert response.status_code == 400
        assert "RecordingSid" in response.text

    def test_put_is_405(self, make_client: Any) -> None:
        """Only GET and POST exist on the callback endpoints."""
        assert make_client().put(CALL_URL).status_code == 405


class TestPublicUrl:
    def test_public_base_url_is_what_is_verified(self, make_client: Any, redis_client: redis.Redis) -> None:
        """Signed for https://example.com/...?tenant=a, sent to the local server: accepted."""
        client = make_client(public_base_url="https://example.com")
        params = call_params(call_sid(5), "ringing", 1)
        response = post(
            client,
            "http://testserver/twilio/call-status?tenant=a",
            params,
            signed_url="https://example.com/twilio/call-status?tenant=a",
        )
        assert response.status_code == 204

    def test_spoofed_forwarded_host_from_untrusted_peer_is_ignored(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """X-Forwarded-Host from a peer that is not a trusted proxy does not change the URL."""
        client = make_client(forwarded_allow_ips="10.9.9.9")
        params = call_params(call_sid(6), "ringing", 1)
        spoofed = {"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"}
        response = post(
            client,
            CALL_URL,
            params,
            signed_url="https://evil.example/twilio/call-status",
            headers=spoofed,
        )
        assert response.status_code == 403
        assert queued_events(redis_client) == []

    def test_forwarded_headers_from_trusted_proxy_are_honoured(self, make_client: Any) -> None:
        """The same headers from a trusted proxy do set the verified URL."""
        client = make_client(forwarded_allow_ips="*")
        params = call_params(call_sid(7), "ringing", 1)
        headers = {"x-forwarded-host": "public.example", "x-forwarded-proto": "https"}
        response = post(
            client,
            CALL_URL,
            params,
            signed_url="https://public.example/twilio/call-status",
            headers=headers,
        )
        assert response.status_code == 204


class TestTokens:
    def test_previous_token_is_accepted_during_rotation(self, make_client: Any) -> None:
        """Requests signed with the previous token pass while it is configured."""
        client = make_client(auth_token="new-token", previous_auth_token=TOKEN)
        assert post(client, CALL_URL, call_params(call_sid(8), "ringing")).status_code == 204
        new = post(client, CALL_URL, call_params(call_sid(8), "ringing"), token="new-token")
        assert new.status_code == 204

    def test_previous_token_is_refused_once_removed(self, make_client: Any) -> None:
        """After the rotation the old token no longer works."""
        client = make_client(auth_token="new-token")
        assert post(client, CALL_URL, call_params(call_sid(8), "ringing")).status_code == 403

    def test_subaccount_requests_use_the_subaccount_token(self, make_client: Any) -> None:
        """A listed AccountSid is checked against its own token, and only that one."""
        sub = "AC" + "b" * 32
        client = make_client(subaccount_tokens={sub: "sub-token"})
        params = call_params(call_sid(9), "ringing")
        params = [(k, sub if k == "AccountSid" else v) for k, v in params]
        assert post(client, CALL_URL, params, token="sub-token").status_code == 204
        assert post(client, CALL_URL, params).status_code == 403


class TestRedisDown:
    def test_callback_gets_503_with_retry_after(self, make_client: Any) -> None:
        """Redis unreachable: 503 with Retry-After, never 2xx."""
        client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
        response = post(client, CALL_URL, call_params(call_sid(1), "ringing"))
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0

    def test_readyz_is_503_and_healthz_200(self, make_client: Any) -> None:
        """Readiness follows Redis; liveness does not."""
        client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200

    def test_readyz_is_200_with_redis(self, make_client: Any) -> None:
        """With Redis up the process is ready."""
        assert make_client().get("/readyz").status_code == 200


class TestRedisFull:
    def test_callbacks_get_503_and_readyz_says_why_until_memory_is_freed(
        self, make_client: Any, redis_client: redis.Redis
    ) -> None:
        """maxmemory reached under noeviction: a callback is 503 with Retry-After (never 204 for
        what was not stored, never 500), /readyz is 503 naming the cause although PING works, and
        both recover by themselves once Redis has room again."""
        client = make_client()
        redis_client.config_set("maxmemory-policy", "noeviction")
        # 1 byte, not the current used_memory: Redis leaves its AOF and replication buffers out
        # of the eviction check, so "maxmemory = used_memory" may still admit a write.
        redis_client.config_set("maxmemory", "1")
        try:
            response = post(client, CALL_URL, call_params(call_sid(7), "ringing"))
            ready = client.get("/readyz")
        finally:
            redis_client.config_set("maxmemory", "0")
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert queued_events(redis_client) == []
        assert ready.status_code == 503
        assert "Redis is full" in ready.text
        assert post(client, CALL_URL, call_params(call_sid(7), "ringing")).status_code == 204
        assert client.get("/readyz").text == "ready"


def test_web_refuses_to_start_without_token() -> None:
    """No TWILIO_AUTH_TOKEN: the app factory fails, naming the variable."""
    from callstate.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError) as info:
        create_app(Settings())
    assert info.value.variable == "TWILIO_AUTH_TOKEN"
