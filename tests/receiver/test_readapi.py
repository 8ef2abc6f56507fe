"""The read API against stored calls: tokens, filters, limits, errors."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from callstate import keys, tokens
from callstate.connection import StoreClient
from callstate.settings import Settings
from callstate.traffic import make_history
from receiver.app import create_app
from tests import storedcall
from tests.redisserver import RedisServer
from tests.twiliosign import TOKEN
from workers.reduce import reduce
from workers.store import Store

KEY = "read-api-secret-0123456789abcdefghijklmnop"


@pytest.fixture(params=["redis", "cluster"])
def store_client(request: pytest.FixtureRequest, redis_client: redis.Redis) -> StoreClient:
    """The read API over a store on the queue's Redis, and on a 3-master cluster (STORE_REDIS_URL)."""
    if request.param == "redis":
        return redis_client
    client: StoreClient = request.getfixturevalue("cluster_client")
    return client


@pytest.fixture
def stored(store_client: StoreClient) -> dict[str, Any]:
    """Twenty reconciled calls; their expected states by CallSid."""
    rng = random.Random(11)
    calls = {f"CA{n:032x}": make_history(rng, f"CA{n:032x}") for n in range(1, 21)}
    # The histories spread over 2026; index scores are bounded to a day around processing time,
    # so each call is processed at its own last event, as it would have been.
    store = Store(store_client, 86_400)
    for history in calls.values():
        times = [e.timestamp.timestamp() for e in history if e.kind == "call" and e.timestamp]
        store.clock = functools.partial(float, max(times, default=time.time()))
        store.apply(history)
    return {sid: reduce(sid, history).to_dict() for sid, history in calls.items()}


@pytest.fixture
def client(
    redis_server: RedisServer, store_client: StoreClient, request: pytest.FixtureRequest
) -> Iterator[TestClient]:
    on_cluster = not isinstance(store_client, redis.Redis)
    store_url = request.getfixturevalue("redis_cluster").url if on_cluster else None
    settings = Settings(
        redis_url=redis_server.url, store_redis_url=store_url, auth_token=TOKEN, secret_key=KEY
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["authorization"] = f"Bearer {tokens.issue(KEY, ttl=60)}"
        yield test_client


class TestGetCall:
    def test_returns_the_stored_state(self, client: TestClient, stored: dict[str, Any]) -> None:
        """GET /calls/{sid} answers the reconciled state JSON."""
        sid = next(iter(stored))
        response = client.get(f"/calls/{sid}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == stored[sid]

    def test_unknown_call_is_404(self, client: TestClient, stored: dict[str, Any]) -> None:
        """A well-formed SID that is not stored."""
        assert client.get(f"/calls/CA{'f' * 32}").status_code == 404

    def test_a_state_this_version_cannot_read_is_503(
        self, client: TestClient, store_client: StoreClient, stored: dict[str, Any]
    ) -> None:
        """A stored state this version cannot decode (a frame made with a dictionary it does not
        ship: a newer version's) is a 503 with the store's fixed reason, never a 500, and the
        value is left as it was."""
        sid = next(iter(stored))
        newer = storedcall.newer_state()
        store_client.hset(keys.call(sid), "state", newer)
        response = client.get(f"/calls/{sid}")
        assert response.status_code == 503
        assert response.text == "store unavailable, retry later"
        assert "Retry-After" in response.headers
        assert store_client.hget(keys.call(sid), "state") == newer

    def test_a_call_not_rewritten_since_schema_2_is_read_as_it_is(
        self, client: TestClient, store_client: StoreClient, stored: dict[str, Any]
    ) -> None:
        """During an upgrade from schema 2 a call may still hold its state as JSON: it is
        answered as stored."""
        sid = next(iter(stored))
        store_client.hset(keys.call(sid), "state", orjson.dumps(stored[sid]))
        response = client.get(f"/calls/{sid}")
        assert response.status_code == 200
        assert response.json() == stored[sid]

    def test_malformed_sid_is_400(self, client: TestClient) -> None:
        """Not CA + 32 hex digits."""
        assert client.get("/calls/CA123").status_code == 400

    @pytest.mark.parametrize(
        "authorization",
        [
            "",
            "Bearer",
            "Bearer nonsense",
            "Basic dXNlcjpwYXNz",
            f"Bearer {tokens.issue('other' * 11, ttl=60)}",
        ],
    )
    def test_without_a_valid_token_is_401_and_no_data(
        self, client: TestClient, stored: dict[str, Any], authorization: str
    ) -> None:
        """Missing, forged or foreign tokens get 401 and no call data."""
        sid = next(iter(stored))
        response = client.get(f"/calls/{sid}", headers={"authorization": authorization})
        assert response.status_code == 401
        assert sid not in response.text


class TestListCalls:
    def test_newest_first(self, client: TestClient, stored: dict[str, Any]) -> None:
        """Calls come back by updated_at, newest first."""
        calls = client.get("/calls?limit=1000").json()["calls"]
        assert {c["sid"] for c in calls} == set(stored)
        stamps = [c["updated_at"] or "" for c in calls if c["updated_at"]]
        assert stamps == sorted(stamps, reverse=True)

    def test_filters(self, client: TestClient, stored: dict[str, Any]) -> None:
        """status= and final= select exactly the matching calls."""
        finals = {sid for sid, state in stored.items() if state["final"]}
        got_final = {c["sid"] for c in client.get("/calls?final=true").json()["calls"]}
        got_active = {c["sid"] for c in client.get("/calls?final=false").json()["calls"]}
        assert got_final == finals
        assert got_active == set(stored) - finals
        status = next(state["status"] for state in stored.values() if state["status"])
        by_status = {c["sid"] for c in client.get(f"/calls?status={status}").json()["calls"]}
        assert by_status == {sid for sid, state in stored.items() if state["status"] == status}

    def test_limit(self, client: TestClient, stored: dict[str, Any]) -> None:
        """limit= caps the answer, and keeps the newest: a page of the merged index buckets."""
        everything = client.get("/calls?limit=1000").json()["calls"]
        assert client.get("/calls?limit=3").json()["calls"] == everything[:3]

    @pytest.mark.parametrize(
        "query", ["limit=0", "limit=1001", "limit=x", "final=maybe", "status=%3Cscript%3E"]
    )
    def test_bad_query_is_400(self, client: TestClient, query: str) -> None:
        """Out-of-range or malformed parameters are refused with a reason."""
        response = client.get(f"/calls?{query}")
        assert response.status_code == 400
        assert response.text
