"""The sweep (workers.sweep): stuck calls asked over REST, index pruning and the lease,
against the session's real redis-server and a local server playing Twilio's Calls API.

Time is injected: calls happen around :data:`T0` and each sweep is told what time it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from callstate import keys
from callstate.connection import StoreClient
from callstate.errors import UnusableAnswer
from callstate.event import Event
from callstate.logs import JSONFormatter
from callstate.settings import Settings
from tests import storedcall
from tests.faketwilio import ACCOUNT, SUBACCOUNT, TIMEOUT, TOKEN, FakeTwilio, basic, call_resource
from tests.redisserver import RedisServer, free_port
from workers import prune as prune_module
from workers.prune import prune
from workers.state import CallState
from workers.store import Store
from workers.stuck import SWEPT, rest_event
from workers.sweep import Sweeper, SweepResult, sweep, sweep_once
from workers.twilioapi import TwilioAPI

RETENTION = 30 * 86_400
STUCK_AFTER = 1800
T0 = datetime(2026, 9, 1, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400


def sid(n: int) -> str:
    return f"CA{n:032x}"


def rfc2822(at: float) -> str:
    return format_datetime(datetime.fromtimestamp(at, UTC))


def callback(call_sid: str, seq: int, status: str, at: float, **extra: str) -> Event:
    params = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT,
        "CallStatus": status,
        "SequenceNumber": str(seq),
        "Timestamp": rfc2822(at),
        "Direction": "outbound-api",
        "From": "+15017122661",
        "To": "+14155551212",
        **extra,
    }
    return Event.create("call", params.items())


def start(store: Store, call_sid: str, at: float, **extra: str) -> None:
    """A call that rang at ``at`` (and was processed then) and was never heard of again."""
    store.clock = lambda: at
    store.apply(
        [callback(call_sid, 0, "initiated", at - 2, **extra), callback(call_sid, 1, "ringing", at, **extra)]
    )


def state(client: redis.Redis, call_sid: str) -> CallState:
    raw = storedcall.state_json(client, call_sid)
    assert raw is not None
    return CallState.from_json(raw)


def bucket(client: StoreClient, call_sid: str) -> int:
    """The index bucket of ``call_sid`` (always 0 on one Redis; one of 16 on a cluster)."""
    return Store(client, RETENTION).bucket(call_sid)


def index_entries(client: StoreClient, call_sid: str) -> dict[str, Any]:
    """Where ``call_sid`` appears in the indexes of its bucket."""
    b = bucket(client, call_sid)
    return {
        "recent": client.zscore(keys.recent(b), call_sid),
        "active": client.zscore(keys.active(b), call_sid),
        "statuses": [
            s for s in ("ringing", "completed", "busy") if client.zscore(keys.by_status(s, b), call_sid)
        ],
        "published": client.hget(keys.published(b), call_sid),
    }


class OnRedisAndCluster:
    """The tests of a subclass run on one redis-server and on a 3-master Redis Cluster."""

    @pytest.fixture(params=["redis", "cluster"])
    def redis_client(self, request: pytest.FixtureRequest, redis_client: redis.Redis) -> StoreClient:
        if request.param == "redis":
            return redis_client
        client: StoreClient = request.getfixturevalue("cluster_client")
        return client


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    # Index scores are bounded around processing time: the store lives at T0 like the calls.
    return Store(redis_client, RETENTION, clock=lambda: T0)


def api_for(fake: FakeTwilio, **options: Any) -> TwilioAPI:
    return TwilioAPI(fake.url, account_sid=ACCOUNT, auth_token=TOKEN, timeout=TIMEOUT, **options)


def run(store: Store, fake: FakeTwilio, at: float, limit: int = 10, **options: Any) -> SweepResult:
    return sweep(store, api_for(fake), stuck_after=STUCK_AFTER, limit=limit, now=lambda: at, **options)


class TestRestEvent:
    def test_a_completed_call_becomes_a_status_callback(self) -> None:
        """A terminal resource becomes a rest event named like a StatusCallback, without a sequence."""
        parent = "CA" + "9" * 32
        event = rest_event(
            call_resource(sid(1), "completed", parent_call_sid=parent, answered_by="human"), sid(1)
        )
        assert event is not None
        assert event.source == "rest"
        assert event.fields() == {
            "AccountSid": ACCOUNT,
            "AnsweredBy": "human",
            "CallDuration": "15",
            "CallSid": sid(1),
            "CallStatus": "completed",
            "Direction": "outbound-api",
            "From": "+15017122661",
            "ParentCallSid": parent,
            "Timestamp": "Tue, 01 Sep 2026 12:00:44 +0000",
            "To": "+14155551212",
        }

    def test_without_end_time_the_timestamp_is_date_updated(self) -> None:
        """A busy call has no end_time nor duration: Timestamp is date_updated, no CallDuration."""
        event = rest_event(
            call_resource(sid(1), "busy", date_updated="Tue, 01 Sep 2026 12:00:09 +0000"), sid(1)
        )
        assert event is not None
        assert event.get("Timestamp") == "Tue, 01 Sep 2026 12:00:09 +0000"
        assert event.get("CallDuration") is None
        assert event.get("SequenceNumber") is None

    @pytest.mark.parametrize("status", ["queued", "ringing", "in-progress", "initiated", "paused"])
    def test_a_call_not_over_is_no_event(self, status: str) -> None:
        """Non-terminal (and unknown) REST statuses give no event."""
        assert rest_event(call_resource(sid(1), status), sid(1)) is None

    def test_an_answer_about_another_call_is_refused(self) -> None:
        """The resource must be the call asked about."""
        with pytest.raises(UnusableAnswer, match="another call"):
            rest_event(call_resource(sid(2)), sid(1))

    def test_a_malformed_sid_is_refused(self) -> None:
        """A SID field that is not a SID makes the answer unusable, as it would a callback."""
        with pytest.raises(UnusableAnswer, match="ParentCallSid"):
            rest_event(call_resource(sid(1), parent_call_sid="CA-nope"), sid(1))


class TestStuckCalls(OnRedisAndCluster):
    @pytest.mark.parametrize(
        ("status", "duration"), [("completed", 15), ("busy", None), ("no-answer", None), ("canceled", None)]
    )
    def test_a_stuck_call_becomes_final_with_the_rest_status(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio, status: str, duration: int | None
    ) -> None:
        """After the sweep the stored call is final with Twilio's status and leaves the ACTIVE index."""
        start(store, sid(1), T0)
        twilio.call(sid(1), status)
        result = run(store, twilio, T0 + STUCK_AFTER + 1)
        after = state(redis_client, sid(1))
        assert (after.status, after.final, after.duration) == (status, True, duration)
        assert after.events[-1].source == "rest"
        assert after.updated_at == datetime(2026, 9, 1, 12, 0, 44, tzinfo=UTC)
        assert index_entries(redis_client, sid(1))["active"] is None
        assert redis_client.zscore(keys.by_status(status, bucket(redis_client, sid(1))), sid(1)) is not None
        assert (result.asked, result.finalized, result.stopped) == (1, [sid(1)], None)
        assert twilio.requests[0].authorization == basic(ACCOUNT, TOKEN)

    def test_calls_not_yet_stuck_are_not_asked(self, store: Store, twilio: FakeTwilio) -> None:
        """A call whose latest event is younger than stuck_after is left alone; at stuck_after it is asked."""
        start(store, sid(1), T0)
        twilio.call(sid(1))
        assert run(store, twilio, T0 + STUCK_AFTER - 1).asked == 0
        assert twilio.requests == []
        assert run(store, twilio, T0 + STUCK_AFTER).asked == 1

    def test_the_limit_bounds_the_requests_oldest_first(self, store: Store, twilio: FakeTwilio) -> None:
        """With five stuck calls and a limit of two, each sweep asks the two oldest not asked yet."""
        for n in range(5):
            start(store, sid(n), T0 + 60 * (4 - n))  # sid(4) is the oldest
            twilio.call(sid(n), "in-progress")
        now = T0 + DAY
        assert run(store, twilio, now, limit=2).asked == 2
        assert twilio.asked() == [sid(4), sid(3)]
        run(store, twilio, now, limit=2)
        assert twilio.asked()[2:] == [sid(2), sid(1)]
        run(store, twilio, now, limit=2)
        assert twilio.asked()[4:] == [sid(0)]

    def test_a_call_is_not_asked_again_within_stuck_after(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio
    ) -> None:
        """An ask is recorded in SWEPT; the call is asked again only once stuck_after has passed."""
        start(store, sid(1), T0)
        twilio.call(sid(1), "in-progress")
        asked_at = T0 + STUCK_AFTER
        run(store, twilio, asked_at)
        assert redis_client.zscore(SWEPT, sid(1)) == asked_at
        run(store, twilio, asked_at + 1)
        run(store, twilio, asked_at + STUCK_AFTER)
        assert len(twilio.requests) == 1
        run(store, twilio, asked_at + STUCK_AFTER + 1)
        assert len(twilio.requests) == 2

    def test_a_non_terminal_answer_changes_nothing(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio
    ) -> None:
        """REST says in-progress: the stored call, its events and its indexes stay as they were."""
        start(store, sid(1), T0)
        twilio.call(sid(1), "in-progress")
        before = redis_client.hgetall(keys.call(sid(1)))
        result = run(store, twilio, T0 + DAY)
        assert (result.asked, result.still_active, result.finalized) == (1, 1, [])
        assert redis_client.hgetall(keys.call(sid(1))) == before
        assert index_entries(redis_client, sid(1))["active"] == T0

    def test_a_404_is_logged_recorded_and_the_sweep_goes_on(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unknown call is logged by CallSid and not asked again soon; the next call is still asked."""
        start(store, sid(1), T0)
        start(store, sid(2), T0 + 1)
        twilio.call(sid(2), "busy")
        with caplog.at_level(logging.INFO, logger="callstate.sweep"):
            result = run(store, twilio, T0 + DAY)
        assert (result.not_found, result.finalized) == (1, [sid(2)])
        assert redis_client.zscore(SWEPT, sid(1)) == T0 + DAY
        assert [r.callstate_fields for r in caplog.records if r.getMessage() == "sweep_call_not_found"] == [  # type: ignore[attr-defined]
            {"call_sid": sid(1)}
        ]
        assert state(redis_client, sid(1)).status == "ringing"

    def test_a_429_stops_the_sweep_and_is_not_recorded(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio
    ) -> None:
        """Rate-limited: no further request in this sweep; the same call is asked first next time."""
        for n in range(3):
            start(store, sid(n), T0 + n)
            twilio.call(sid(n), "completed")
        twilio.fail(sid(0), 429, headers={"Retry-After": "1"})
        result = run(store, twilio, T0 + DAY)
        assert (result.asked, result.stopped, twilio.asked()) == (1, "rate_limited", [sid(0)])
        assert redis_client.zcard(SWEPT) == 0
        twilio.call(sid(0))
        assert run(store, twilio, T0 + DAY).finalized == [sid(0), sid(1), sid(2)]

    @pytest.mark.parametrize("failure", ["500", "503", "timeout"])
    def test_a_transient_error_stops_the_sweep_and_the_next_one_moves_on(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio, failure: str
    ) -> None:
        """5xx or timeout: the sweep stops, the call is recorded, so one failing call cannot block others."""
        for n in range(3):
            start(store, sid(n), T0 + n)
            twilio.call(sid(n), "completed")
        if failure == "timeout":
            twilio.hang(sid(0))
        else:
            twilio.fail(sid(0), int(failure))
        first = run(store, twilio, T0 + DAY)
        assert (first.asked, first.failed, first.stopped) == (1, 1, "unavailable")
        assert redis_client.zscore(SWEPT, sid(0)) == T0 + DAY
        second = run(store, twilio, T0 + DAY + 60)
        assert second.finalized == [sid(1), sid(2)]
        assert state(redis_client, sid(0)).final is False

    @pytest.mark.parametrize("status", [401, 403])
    def test_refused_credentials_stop_the_sweep(
        self, store: Store, twilio: FakeTwilio, caplog: pytest.LogCaptureFixture, status: int
    ) -> None:
        """401/403 end the sweep (every request would fail alike), logged as an error."""
        for n in range(3):
            start(store, sid(n), T0 + n)
            twilio.fail(sid(n), status)
        with caplog.at_level(logging.INFO, logger="callstate.sweep"):
            result = run(store, twilio, T0 + DAY)
        assert (result.asked, result.stopped) == (1, "credentials")
        assert [r.levelno for r in caplog.records if r.getMessage() == "sweep_call_failed"] == [logging.ERROR]

    @pytest.mark.parametrize(
        "body", [b'{"sid": "CA', b"[]", b'{"sid": "CA00000000000000000000000000000009"}']
    )
    def test_an_unreadable_answer_skips_only_that_call(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio, body: bytes
    ) -> None:
        """Malformed JSON, or a resource about another call, is counted and the sweep goes on."""
        start(store, sid(1), T0)
        start(store, sid(2), T0 + 1)
        twilio.fail(sid(1), 200, body)
        twilio.call(sid(2))
        result = run(store, twilio, T0 + DAY)
        assert (result.failed, result.finalized, result.stopped) == (1, [sid(2)], None)
        assert state(redis_client, sid(1)).final is False
        assert redis_client.zscore(SWEPT, sid(1)) == T0 + DAY

    def test_a_subaccount_call_is_asked_under_its_account(self, store: Store, twilio: FakeTwilio) -> None:
        """The path names the call's own (sub)account; the credentials are the main account's."""
        store.apply([callback(sid(1), 0, "ringing", T0, AccountSid=SUBACCOUNT)])
        twilio.call(sid(1), account=SUBACCOUNT)
        run(store, twilio, T0 + DAY)
        assert (twilio.requests[0].account_sid, twilio.requests[0].authorization) == (
            SUBACCOUNT,
            basic(ACCOUNT, TOKEN),
        )

    def test_an_expired_call_is_not_asked(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio
    ) -> None:
        """A call whose keys expired is never brought back by a REST answer; pruning deals with it."""
        start(store, sid(1), T0)
        twilio.call(sid(1))
        redis_client.delete(*keys.of_record(sid(1)))
        result = run(store, twilio, T0 + DAY)
        assert (result.asked, result.skipped) == (0, 1)
        assert not redis_client.exists(keys.call(sid(1)))

    @pytest.mark.parametrize(("status", "duration"), [("completed", 42), ("no-answer", None)])
    def test_a_later_callback_with_a_sequence_number_wins(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio, status: str, duration: int | None
    ) -> None:
        """The terminal callback that finally arrives outranks the REST observation (reducer rules)."""
        start(store, sid(1), T0)
        twilio.call(sid(1), "completed")
        run(store, twilio, T0 + DAY)
        assert state(redis_client, sid(1)).duration == 15
        late = {"CallDuration": "42"} if status == "completed" else {}
        store.apply([callback(sid(1), 2, status, T0 + 44, **late)])
        after = state(redis_client, sid(1))
        assert (after.status, after.final, after.duration, after.sequence_number) == (
            status,
            True,
            duration,
            2,
        )
        assert index_entries(redis_client, sid(1))["active"] is None

    def test_one_log_line_per_sweep_with_counts_and_no_phone_numbers(
        self, store: Store, twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The sweep logs one `sweep` line with its counts; no line carries a phone number."""
        for n in range(3):
            start(store, sid(n), T0 + n)
        twilio.call(sid(0))
        twilio.call(sid(1), "in-progress")
        with caplog.at_level(logging.DEBUG, logger="callstate"):
            run(store, twilio, T0 + DAY)
        lines = [r for r in caplog.records if r.getMessage() == "sweep"]
        assert len(lines) == 1
        fields = lines[0].callstate_fields  # type: ignore[attr-defined]
        assert {k: fields[k] for k in ("scanned", "asked", "finalized", "still_active", "not_found")} == {
            "scanned": 3,
            "asked": 3,
            "finalized": 1,
            "still_active": 1,
            "not_found": 1,
        }
        formatted = [JSONFormatter().format(r) for r in caplog.records if r.name.startswith("callstate")]
        assert formatted
        assert not [line for line in formatted if "5017122661" in line or "4155551212" in line]

    def test_without_credentials_the_sweep_only_prunes(self, store: Store, redis_client: redis.Redis) -> None:
        """No REST client: nothing is asked, old expired index entries still go."""
        start(store, sid(1), T0)
        start(store, sid(2), T0 - 40 * DAY)
        redis_client.delete(keys.call(sid(2)))
        result = sweep(store, None, stuck_after=STUCK_AFTER, limit=10, now=lambda: T0 + DAY)
        assert (result.asked, result.pruned) == (0, 1)


class TestPrune(OnRedisAndCluster):
    def test_only_expired_calls_older_than_the_retention_are_pruned(
        self, store: Store, redis_client: redis.Redis
    ) -> None:
        """Entries go when the call key is gone AND the score is past the retention; all others stay."""
        old = T0 - 31 * DAY
        start(store, sid(1), old)  # old, expired: pruned
        start(store, sid(2), old)  # old, key still there: kept
        start(store, sid(3), T0 - DAY)  # young, expired: kept (its score is within the retention)
        store.clock = lambda: old
        store.apply([callback(sid(4), 0, "busy", old)])  # final, old, expired: pruned
        for expired in (sid(1), sid(3), sid(4)):
            redis_client.delete(*keys.of_record(expired))
        pruned = prune(store, now=T0)
        assert pruned == 2
        empty: dict[str, Any] = {"recent": None, "active": None, "statuses": [], "published": None}
        assert index_entries(redis_client, sid(1)) == empty
        assert index_entries(redis_client, sid(4)) == empty
        assert index_entries(redis_client, sid(2))["statuses"] == ["ringing"]
        assert index_entries(redis_client, sid(2))["active"] == old
        assert index_entries(redis_client, sid(3))["recent"] == T0 - DAY

    def test_pruning_is_bounded_per_sweep(self, store: Store, redis_client: redis.Redis) -> None:
        """At most `limit` entries are looked at per sweep; the rest wait for the next one."""
        for n in range(3):
            start(store, sid(n), T0 - 40 * DAY + n)
            redis_client.delete(keys.call(sid(n)))
        assert prune(store, now=T0, limit=2) == 2
        assert [index_entries(redis_client, sid(n))["recent"] is None for n in range(3)] == [
            True,
            True,
            False,
        ]
        assert prune(store, now=T0, limit=2) == 1
        assert index_entries(redis_client, sid(2))["recent"] is None

    def test_a_call_published_again_meanwhile_keeps_its_entries(
        self, store: Store, redis_client: redis.Redis
    ) -> None:
        """The removal re-checks PUBLISHED atomically: a call republished since the read is kept."""
        start(store, sid(1), T0 - 40 * DAY)
        published_before = "1:initiated"  # what a reader saw before the call was published again
        script = redis_client.register_script(prune_module.PRUNE_SCRIPT)
        b = bucket(redis_client, sid(1))
        script_keys = [keys.published(b), keys.recent(b), keys.active(b), keys.by_status("ringing", b)]
        assert script(keys=script_keys, args=[T0 - RETENTION, sid(1), published_before]) == 0
        assert index_entries(redis_client, sid(1))["recent"] == T0 - 40 * DAY

    def test_old_asks_are_trimmed_from_swept(self, store: Store, redis_client: redis.Redis) -> None:
        """SWEPT only keeps the asks of the last stuck_after seconds."""
        redis_client.zadd(SWEPT, {sid(1): T0 - STUCK_AFTER - 1, sid(2): T0 - 10})
        sweep(store, None, stuck_after=STUCK_AFTER, limit=10, now=lambda: T0)
        assert redis_client.zrange(SWEPT, 0, -1) == [sid(2).encode()]


class TestLease:
    def test_no_sweep_while_another_process_holds_the_lease(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """A running sweep's lease keeps both the periodic sweeper and a one-shot sweep out."""
        redis_client.set(keys.SWEEP_LOCK, "someone-else", px=60_000)
        settings = Settings(redis_url=redis_server.url)
        assert sweep_once(settings, api=None, redis=redis_client, periodic=True) is None
        assert sweep_once(settings, api=None, redis=redis_client) is None

    def test_after_a_sweep_the_lease_is_idle_for_the_rest_of_the_interval(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """Periodic sweepers skip an idle lease; a one-shot `callstate sweep` takes it."""
        settings = Settings(redis_url=redis_server.url)
        first = sweep_once(settings, api=None, redis=redis_client, interval=60, periodic=True)
        assert isinstance(first, SweepResult)
        assert redis_client.get(keys.SWEEP_LOCK) == b"idle"
        assert 0 < redis_client.pttl(keys.SWEEP_LOCK) <= 60_000
        assert sweep_once(settings, api=None, redis=redis_client, periodic=True) is None
        assert isinstance(sweep_once(settings, api=None, redis=redis_client), SweepResult)

    def test_the_sweeper_thread_sweeps_and_stops(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """Started, the thread sweeps at once; stop() ends it promptly."""
        ticked = threading.Event()

        class Probe(Sweeper):
            def tick(self, client: StoreClient) -> SweepResult | None:
                result = super().tick(client)
                ticked.set()
                return result

        sweeper = Probe(Settings(redis_url=redis_server.url), interval=3600)
        sweeper.start()
        try:
            assert ticked.wait(10)
        finally:
            sweeper.stop()
        assert not sweeper._thread.is_alive()
        assert redis_client.get(keys.SWEEP_LOCK) == b"idle"

    def test_a_failing_tick_is_logged_and_swallowed(self, caplog: pytest.LogCaptureFixture) -> None:
        """Redis down: the tick logs `sweep_failed` and returns, so the thread lives on."""
        dead = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
        sweeper = Sweeper(Settings(), interval=3600)
        with caplog.at_level(logging.ERROR, logger="callstate.sweep"):
            assert sweeper.tick(dead) is None
        dead.close()
        assert [r.getMessage() for r in caplog.records] == ["sweep_failed"]


def sweep_counters(client: redis.Redis) -> dict[str, int]:
    """The sweep's fields of the deployment's counters hash."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.METRICS))
    prefix = "sweep_requests:"
    return {f.decode()[len(prefix) :]: int(v) for f, v in raw.items() if f.decode().startswith(prefix)}


class TestRequestCounters:
    def test_each_request_is_counted_under_its_outcome(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio
    ) -> None:
        """404, not over, over, unreadable, then a 429 that stops the sweep: one count each,
        adding up to the requests made."""
        for n in range(6):
            start(store, sid(n), T0 + n)
        twilio.call(sid(1), "in-progress")
        twilio.call(sid(2), "completed")
        twilio.fail(sid(3), 200, b"[]")
        twilio.fail(sid(4), 429)
        twilio.call(sid(5), "completed")
        result = run(store, twilio, T0 + DAY)
        expected = {"not_found": 1, "still_active": 1, "final": 1, "failed": 1, "rate_limited": 1}
        assert sweep_counters(redis_client) == expected
        assert sum(expected.values()) == result.asked

    @pytest.mark.parametrize(("failure", "outcome"), [(503, "unavailable"), (401, "credentials")])
    def test_the_request_that_stops_the_sweep_is_counted_by_why(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio, failure: int, outcome: str
    ) -> None:
        """A 5xx or refused credentials count under their reason, not as a plain failure."""
        start(store, sid(1), T0)
        twilio.fail(sid(1), failure)
        run(store, twilio, T0 + DAY)
        assert sweep_counters(redis_client) == {outcome: 1}

    def test_a_sweep_that_asks_nothing_writes_no_counter(
        self, store: Store, redis_client: redis.Redis, twilio: FakeTwilio
    ) -> None:
        """No request, no counter: a quiet sweep adds no round trip for metrics."""
        start(store, sid(1), T0)
        run(store, twilio, T0 + 1)
        assert twilio.requests == []
        assert sweep_counters(redis_client) == {}
