"""The Redis-backed reconciler (workers.store) against the session's real redis-server."""

from __future__ import annotations

import random
import time
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callstate import keys
from callstate.counters import LAG_FIELDS, LAG_SUM
from callstate.event import Event
from callstate.traffic import make_history
from tests.histories import call_histories, shuffled_with_duplicates
from workers.reduce import reduce
from workers.store import Store

RETENTION = 30 * 86_400


def snapshot(client: redis.Redis, sid: str) -> dict[str, Any]:
    """Everything stored about one call, in a comparable form."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.CHANGES))
    changes = [fields for _, fields in entries if fields[b"call"] == sid.encode()]
    return {
        "call": client.hgetall(keys.call(sid)),
        "events": client.hgetall(keys.events(sid)),
        "published": client.hget(keys.PUBLISHED, sid),
        "last_change": changes[-1] if changes else None,
        "changes": len(changes),
    }


def in_batches(events: list[Event], sizes: list[int]) -> list[list[Event]]:
    batches, start = [], 0
    for size in sizes:
        if start >= len(events):
            break
        batches.append(events[start : start + size])
        start += size
    if start < len(events):
        batches.append(events[start:])
    return batches


class TestApply:
    def test_state_is_the_reduction_of_the_stored_events(self, redis_client: redis.Redis) -> None:
        """After apply, the stored state is reduce() of the call's distinct events."""
        sid = "CA" + "1" * 32
        events = make_history(random.Random(1), sid)
        Store(redis_client, RETENTION).apply(events)
        stored = redis_client.hget(keys.call(sid), "state")
        assert stored == reduce(sid, events).to_json()

    def test_applying_the_same_batch_twice_changes_nothing(self, redis_client: redis.Redis) -> None:
        """A job that runs twice leaves the store as one run did: no new version, no stream entry."""
        sid = "CA" + "2" * 32
        events = make_history(random.Random(2), sid)
        store = Store(redis_client, RETENTION)
        first = store.apply(events)
        before = snapshot(redis_client, sid)
        second = store.apply(events)
        assert first.changed == [sid]
        assert second.changed == []
        assert second.new_events == 0
        assert snapshot(redis_client, sid) == before

    def test_one_stream_entry_per_change_and_none_for_a_duplicate(self, redis_client: redis.Redis) -> None:
        """Each event applied alone that changes the state adds exactly one stream entry."""
        sid = "CA" + "3" * 32
        events = make_history(random.Random(3), sid)
        store = Store(redis_client, RETENTION)
        for event in events:
            store.apply([event])
            store.apply([event])
        version = int(redis_client.hget(keys.call(sid), "version") or 0)
        assert snapshot(redis_client, sid)["changes"] == version
        assert version <= len(events)

    def test_indexes_follow_the_state(self, redis_client: redis.Redis) -> None:
        """A final call leaves the active index and is counted under its status."""
        sid = "CA" + "4" * 32
        events = make_history(random.Random(4), sid)
        Store(redis_client, RETENTION).apply(events)
        state = reduce(sid, events)
        status = state.status or "none"
        assert redis_client.zscore(keys.RECENT, sid) is not None
        assert (redis_client.zscore(keys.ACTIVE, sid) is None) == state.final
        assert redis_client.zscore(keys.by_status(status), sid) is not None
        others = [s for s in ("ringing", "in-progress", "completed") if s != status]
        assert all(redis_client.zscore(keys.by_status(s), sid) is None for s in others)

    def test_keys_expire_after_the_retention(self, redis_client: redis.Redis) -> None:
        """Every key of a call carries a TTL no longer than the retention."""
        sid = "CA" + "5" * 32
        Store(redis_client, RETENTION).apply(make_history(random.Random(5), sid))
        for key in (keys.call(sid), keys.events(sid)):
            assert 0 < redis_client.ttl(key) <= RETENTION

    def test_a_missed_publish_is_done_by_the_next_job(
        self, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Outbox: a worker that died after the write and before publishing is caught up later."""
        sid = "CA" + "6" * 32
        events = make_history(random.Random(6), sid)
        store = Store(redis_client, RETENTION)

        def die(*args: object) -> int:
            raise ConnectionError("worker died")

        monkeypatch.setattr(store, "_publish_versions", die)
        with pytest.raises(ConnectionError):
            store.apply(events)
        assert redis_client.hget(keys.PUBLISHED, sid) is None
        monkeypatch.undo()
        result = store.apply(events[:1])
        assert result.published == 1
        version = cast(bytes, redis_client.hget(keys.call(sid), "version"))
        published = cast(bytes, redis_client.hget(keys.PUBLISHED, sid))
        assert published.split(b":")[0] == version

    def test_recording_without_call_is_kept_by_recording(self, redis_client: redis.Redis) -> None:
        """A recording callback naming no call is stored under its RecordingSid."""
        sid = "RE" + "7" * 32
        event = Event.create("recording", [("RecordingSid", sid), ("RecordingStatus", "completed")])
        result = Store(redis_client, RETENTION).apply([event])
        assert result.orphan_recordings == 1
        assert redis_client.hlen(keys.orphan_recording(sid)) == 1


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), history=call_histories())
def test_any_order_any_duplicates_any_batching_same_store(
    redis_client: redis.Redis, data: st.DataObject, history: tuple[str, list[Event]]
) -> None:
    """The stored call, its events and its last change-stream entry are byte-identical whatever
    the order, the duplicates and the batching of the same events."""
    sid, events = history
    store = Store(redis_client, RETENTION)
    redis_client.flushall()
    store.apply(events)
    expected = snapshot(redis_client, sid)

    redis_client.flushall()
    delivered = data.draw(shuffled_with_duplicates(events))
    sizes = data.draw(st.lists(st.integers(1, 4), max_size=len(delivered)))
    for batch in in_batches(delivered, sizes):
        store.apply(batch)
    got = snapshot(redis_client, sid)
    assert got["call"].get(b"state") == expected["call"].get(b"state")
    assert got["events"] == expected["events"]

    def last(snap: dict[str, Any]) -> tuple[bytes, bytes] | None:
        change = snap["last_change"]
        return None if change is None else (change[b"status"], change[b"final"])

    assert last(got) == last(expected)
    # One entry per change: as many entries as versions, none for a duplicate.
    assert got["changes"] == int(got["call"].get(b"version", 0))


def test_scripts_are_reloaded_after_redis_lost_them(redis_client: redis.Redis) -> None:
    """After SCRIPT FLUSH (what a Redis restart does to the cache) the store loads its scripts
    again instead of failing the job."""
    store = Store(redis_client, RETENTION)
    sid = "CA" + "8" * 32
    events = make_history(random.Random(8), sid)
    store.apply(events[:1])
    redis_client.script_flush()
    store.apply(events)
    assert redis_client.hget(keys.call(sid), "state") == reduce(sid, events).to_json()
    version = int(cast(bytes, redis_client.hget(keys.call(sid), "version")))
    assert redis_client.xlen(keys.CHANGES) == version


def counters(client: redis.Redis) -> dict[str, int]:
    """The deployment's counters hash, decoded."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.METRICS))
    return {field.decode(): int(value) for field, value in raw.items()}


def delivered(sid: str, status: str, sequence: int, received_at: float) -> Event:
    params = [("CallSid", sid), ("CallStatus", status), ("SequenceNumber", str(sequence))]
    return Event.create("call", params, received_at=received_at)


class TestCounters:
    """What a job adds to the deployment's counters (callstate.counters), with its own writes.

    Lags are made deterministic by the events' ``received_at``: an hour ago lands beyond the last
    bucket, a time in the future (a web clock ahead of the worker's) counts as zero.
    """

    def test_new_events_state_changes_and_lags_are_counted(self, redis_client: redis.Redis) -> None:
        """Two new events of one call: two new, one state change (to completed), two lags."""
        sid = "CA" + "a" * 32
        now = time.time()
        events = [delivered(sid, "ringing", 1, now - 3600), delivered(sid, "completed", 2, now + 3600)]
        result = Store(redis_client, RETENTION).apply(events)
        expected = {
            "events:new": 2,
            "state_changes:completed": 1,
            "lag_bucket:+Inf": 1,
            LAG_FIELDS[0]: 1,
        }
        got = counters(redis_client)
        assert got.pop(LAG_SUM) >= 3600 * 1_000_000
        assert got == expected
        assert {k: v for k, v in result.counts.items() if k != LAG_SUM} == expected

    def test_a_batch_of_duplicates_is_counted_without_anything_to_publish(
        self, redis_client: redis.Redis
    ) -> None:
        """A job that changes no state still counts its events (duplicates) and their lags."""
        sid = "CA" + "b" * 32
        store = Store(redis_client, RETENTION)
        events = [delivered(sid, "ringing", 1, time.time() + 3600)]
        store.apply(events)
        again = store.apply(events + events)
        assert again.published == 0
        assert counters(redis_client)["events:duplicate"] == 2
        assert counters(redis_client)[LAG_FIELDS[0]] == 3

    def test_recordings_without_a_call_are_counted_as_events(self, redis_client: redis.Redis) -> None:
        """Conference recordings are events too: new the first time, duplicate after."""
        event = Event.create(
            "recording",
            [("RecordingSid", "RE" + "c" * 32), ("RecordingStatus", "completed")],
            received_at=time.time() + 3600,
        )
        store = Store(redis_client, RETENTION)
        store.apply([event])
        store.apply([event])
        got = counters(redis_client)
        assert (got["events:new"], got["events:duplicate"], got[LAG_FIELDS[0]]) == (1, 1, 2)

    def test_counts_are_written_once_when_the_publish_script_was_lost(
        self, redis_client: redis.Redis
    ) -> None:
        """After SCRIPT FLUSH the publish runs again, but the counts that went with it are not
        added a second time."""
        sid = "CA" + "d" * 32
        store = Store(redis_client, RETENTION)
        redis_client.script_flush()
        store.apply([delivered(sid, "ringing", 1, time.time() + 3600)])
        assert counters(redis_client)["events:new"] == 1
        assert counters(redis_client)["state_changes:ringing"] == 1
        assert redis_client.zcard(keys.by_status("ringing")) == 1

    def test_a_replay_that_changes_nothing_counts_nothing(self, redis_client: redis.Redis) -> None:
        """`callstate replay` adds no events; with nothing to change it writes no counter."""
        sid = "CA" + "e" * 32
        store = Store(redis_client, RETENTION)
        store.apply([delivered(sid, "ringing", 1, time.time() + 3600)])
        before = counters(redis_client)
        assert store.refresh([sid]).counts == {}
        assert counters(redis_client) == before
