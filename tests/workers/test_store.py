"""The Redis-backed reconciler (workers.store) against the session's real redis-server."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from callstate import keys
from callstate.connection import StoreClient
from callstate.counters import LAG_FIELDS, LAG_SUM, event_field
from callstate.errors import UnreadableValue
from callstate.event import Event
from callstate.paramnames import KNOWN
from callstate.traffic import make_history
from tests import storedcall
from tests.histories import call_histories, shuffled_with_duplicates
from tests.resplits import resplits
from tests.twiliosign import call_params, call_sid
from workers.reduce import reduce
from workers.store import INDEX_WINDOW, OVER_CAP, Store

#: Processing time of the index tests.
NOW = 1_800_000_000.0

RETENTION = 30 * 86_400


@pytest.fixture(params=["redis", "cluster"])
def redis_client(request: pytest.FixtureRequest, redis_client: redis.Redis) -> StoreClient:
    """Every test of this module on one redis-server and on a 3-master Redis Cluster."""
    if request.param == "redis":
        return redis_client
    client: StoreClient = request.getfixturevalue("cluster_client")
    return client


def bucket(client: StoreClient, sid: str) -> int:
    """The index bucket of ``sid`` (always 0 on one Redis; one of 16 on a cluster)."""
    return Store(client, RETENTION).bucket(sid)


def snapshot(client: StoreClient, sid: str) -> dict[str, Any]:
    """Everything stored about one call, in a comparable form."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.changes(bucket(client, sid))))
    changes = [fields for _, fields in entries if fields[b"call"] == sid.encode()]
    return {
        **storedcall.content(client, sid),
        "published": client.hget(keys.published(bucket(client, sid)), sid),
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
    def test_state_is_the_reduction_of_the_stored_events(self, redis_client: StoreClient) -> None:
        """After apply, the stored state is reduce() of the call's distinct events."""
        sid = "CA" + "1" * 32
        events = make_history(random.Random(1), sid)
        Store(redis_client, RETENTION).apply(events)
        stored = storedcall.state_json(redis_client, sid)
        assert stored == reduce(sid, events).to_json()

    def test_applying_the_same_batch_twice_changes_nothing(self, redis_client: StoreClient) -> None:
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

    def test_one_stream_entry_per_change_and_none_for_a_duplicate(self, redis_client: StoreClient) -> None:
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

    def test_indexes_follow_the_state(self, redis_client: StoreClient) -> None:
        """A final call leaves the active index and is counted under its status."""
        sid = "CA" + "4" * 32
        events = make_history(random.Random(4), sid)
        Store(redis_client, RETENTION).apply(events)
        state = reduce(sid, events)
        status = state.status or "none"
        assert redis_client.zscore(keys.recent(bucket(redis_client, sid)), sid) is not None
        assert (redis_client.zscore(keys.active(bucket(redis_client, sid)), sid) is None) == state.final
        assert redis_client.zscore(keys.by_status(status, bucket(redis_client, sid)), sid) is not None
        others = [s for s in ("ringing", "in-progress", "completed") if s != status]
        assert all(
            redis_client.zscore(keys.by_status(s, bucket(redis_client, sid)), sid) is None for s in others
        )

    def test_keys_expire_after_the_retention(self, redis_client: StoreClient) -> None:
        """Every key of a call carries a TTL no longer than the retention."""
        sid = "CA" + "5" * 32
        Store(redis_client, RETENTION).apply(make_history(random.Random(5), sid))
        for key in keys.of_record(sid):
            assert 0 < redis_client.ttl(key) <= RETENTION

    def test_a_missed_publish_is_done_by_the_next_job(
        self, redis_client: StoreClient, monkeypatch: pytest.MonkeyPatch
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
        assert redis_client.hget(keys.published(bucket(redis_client, sid)), sid) is None
        monkeypatch.undo()
        result = store.apply(events[:1])
        assert result.published == 1
        version = cast(bytes, redis_client.hget(keys.call(sid), "version"))
        published = cast(bytes, redis_client.hget(keys.published(bucket(redis_client, sid)), sid))
        assert published.split(b":")[0] == version

    def test_a_version_published_twice_after_a_newer_one_gets_one_entry(
        self, redis_client: StoreClient
    ) -> None:
        """Three workers racing on one call: v5 is published first, then v4 both by the worker
        that committed it and by another job's outbox (it read v4 before v5 was written). Each
        version gets one stream entry, whatever the order; the indexes keep the newest."""
        sid = "CA" + "7" * 32
        state = reduce(sid, make_history(random.Random(7), sid))
        store = Store(redis_client, RETENTION)
        for version in (5, 4, 4, 5, 3, 4, 3, 6, 4, 6):
            store._publish_versions({sid: (version, state)}, {})
        stream = keys.changes(bucket(redis_client, sid))
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(stream))
        versions = [int(fields[b"version"]) for _, fields in entries if fields[b"call"] == sid.encode()]
        assert sorted(versions) == [3, 4, 5, 6]
        published = cast(bytes, redis_client.hget(keys.published(bucket(redis_client, sid)), sid))
        assert published.split(b":")[:2] == [b"6", (state.status or "none").encode()]

    def test_recording_without_call_is_kept_by_recording(self, redis_client: StoreClient) -> None:
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
    redis_client: StoreClient, data: st.DataObject, history: tuple[str, list[Event]]
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
    assert got["state"] == expected["state"]
    assert got["events"] == expected["events"]

    def last(snap: dict[str, Any]) -> tuple[bytes, bytes] | None:
        change = snap["last_change"]
        return None if change is None else (change[b"status"], change[b"final"])

    assert last(got) == last(expected)
    # One entry per change: as many entries as versions, none for a duplicate.
    assert got["changes"] == int(got["version"] or 0)


def test_scripts_are_reloaded_after_redis_lost_them(redis_client: StoreClient) -> None:
    """After SCRIPT FLUSH (what a Redis restart does to the cache) the store loads its scripts
    again instead of failing the job."""
    store = Store(redis_client, RETENTION)
    sid = "CA" + "8" * 32
    events = make_history(random.Random(8), sid)
    store.apply(events[:1])
    redis_client.script_flush()
    store.apply(events)
    assert storedcall.state_json(redis_client, sid) == reduce(sid, events).to_json()
    version = int(cast(bytes, redis_client.hget(keys.call(sid), "version")))
    assert redis_client.xlen(keys.changes(bucket(redis_client, sid))) == version


def counters(client: StoreClient) -> dict[str, int]:
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

    def test_new_events_state_changes_and_lags_are_counted(self, redis_client: StoreClient) -> None:
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
        self, redis_client: StoreClient
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

    def test_recordings_without_a_call_are_counted_as_events(self, redis_client: StoreClient) -> None:
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
        self, redis_client: StoreClient
    ) -> None:
        """After SCRIPT FLUSH the publish runs again, but the counts that went with it are not
        added a second time."""
        sid = "CA" + "d" * 32
        store = Store(redis_client, RETENTION)
        redis_client.script_flush()
        store.apply([delivered(sid, "ringing", 1, time.time() + 3600)])
        assert counters(redis_client)["events:new"] == 1
        assert counters(redis_client)["state_changes:ringing"] == 1
        assert redis_client.zcard(keys.by_status("ringing", bucket(redis_client, sid))) == 1

    def test_a_replay_that_changes_nothing_counts_nothing(self, redis_client: StoreClient) -> None:
        """`callstate replay` adds no events; with nothing to change it writes no counter."""
        sid = "CA" + "e" * 32
        store = Store(redis_client, RETENTION)
        store.apply([delivered(sid, "ringing", 1, time.time() + 3600)])
        before = counters(redis_client)
        assert store.refresh([sid]).counts == {}
        assert counters(redis_client) == before


def touches_a_known_name(genuine: tuple[tuple[str, str], ...], split: list[tuple[str, str]]) -> bool:
    """Whether a re-split changes a pair that has a known Twilio name on either side.

    One that only re-cuts unknown parameters (``SomeFutureParam=x`` as ``SomeFu=tureParamx``)
    cannot be told from Twilio's split by any rule, since nothing says where an unknown name
    ends; README "Security" states it. Such a variant never reaches the state (unknown
    parameters are kept, never read), which :meth:`TestResplitsInTheStore` checks apart.
    """
    changed = set(genuine) ^ set(split)
    return any(name in KNOWN for name, _ in changed)


class TestResplitsInTheStore:
    @staticmethod
    def deliver(
        redis_client: redis.Redis, data: st.DataObject, genuine: list[Event], known: bool
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The store after the genuine events alone, and after them with re-splits of one of them
        (touching a known name or not, as ``known`` says) in any order and batches."""
        redis_client.flushall()
        Store(redis_client, RETENTION).apply(genuine)
        sid = genuine[0].call_sid or ""
        expected = snapshot(redis_client, sid)

        redis_client.flushall()
        target = data.draw(st.sampled_from(genuine))
        candidates = [s for s in resplits(target.params) if touches_a_known_name(target.params, s) == known]
        assume(candidates)
        splits = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=8))
        variants = [Event.create(target.kind, split, source=target.source) for split in splits]
        delivered = data.draw(st.permutations(genuine + variants))
        sizes = data.draw(st.lists(st.integers(1, 4), max_size=len(delivered)))
        store = Store(redis_client, RETENTION)
        for batch in in_batches(delivered, sizes):
            store.apply(batch)
        return expected, snapshot(redis_client, sid), sid

    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(history=call_histories(), data=st.data())
    def test_resplits_in_any_order_leave_the_event_set_and_state_of_the_genuine_ones(
        self, redis_client: redis.Redis, history: tuple[str, list[Event]], data: st.DataObject
    ) -> None:
        """Genuine events and re-splits of them that move a known name's boundary
        (tests/resplits.py), applied in any order and batches: the event set and the state are
        those of the genuine events alone, so adding kept Twilio's split in every slot whatever
        came first."""
        _, events = history
        genuine = [e for e in events if e.source == "twilio"] or events
        expected, got, _ = self.deliver(redis_client, data, genuine, known=True)
        assert got["events"] == expected["events"]
        assert got["state"] == expected["state"]

    # Few histories have an unknown parameter to re-split: the filtering is the point, and it made
    # the health check fail one local run in three (CI derandomizes, so it never did there).
    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    )
    @given(history=call_histories(), data=st.data())
    def test_resplits_of_unknown_parameters_never_change_the_state(
        self, redis_client: redis.Redis, history: tuple[str, list[Event]], data: st.DataObject
    ) -> None:
        """Re-splits that only re-cut unknown parameters may take their slot (no rule can tell
        them from Twilio's), but the state stays that of the genuine events."""
        _, events = history
        genuine = [e for e in events if e.source == "twilio"] or events
        assume(any(name not in KNOWN for e in genuine for name, _ in e.params))
        expected, got, _ = self.deliver(redis_client, data, genuine, known=False)
        assert got["state"] == expected["state"]


class TestUnreadable:
    def test_a_record_it_cannot_read_fails_the_job_after_the_others_are_applied(
        self, redis_client: StoreClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A call hash whose values this version cannot decode (a newer version's) is left
        untouched and its events unapplied; the other calls of the batch are reconciled, then
        apply() raises so that RQ keeps the job for a retry."""
        bad, good = "CA" + "b" * 32, "CA" + "9" * 32
        newer = storedcall.newer_state()
        redis_client.hset(keys.call(bad), mapping={"state": newer, "version": 2})
        good_history = make_history(random.Random(22), good)
        events = make_history(random.Random(21), bad) + good_history
        with caplog.at_level(logging.ERROR, "callstate.worker"), pytest.raises(UnreadableValue, match=bad):
            Store(redis_client, RETENTION).apply(events)
        assert redis_client.hgetall(keys.call(bad)) == {b"state": newer, b"version": b"2"}
        assert storedcall.state_json(redis_client, good) == reduce(good, good_history).to_json()
        [line] = [r.callstate_fields for r in caplog.records if r.getMessage() == "record_unreadable"]  # type: ignore[attr-defined]
        assert line["call_sid"] == bad
        assert "unknown dictionary" in line["error"]


class TestUpgradeFromSchema2:
    def test_a_schema_2_record_takes_new_events_and_is_rewritten_as_schema_3(
        self, redis_client: StoreClient
    ) -> None:
        """A record still in schema 2's form (not migrated, or written by a schema 2 worker still
        running during the upgrade) is read with its old keys' events and counts; the next write
        stores everything in the call hash and deletes the old keys."""
        sid = "CA" + "e" * 32
        rng = random.Random(31)
        history = make_history(rng, sid)
        while len(history) < 3:
            history = make_history(rng, sid)
        old, new = history[:-1], history[-1]
        storedcall.write_schema_2(redis_client, sid, old, RETENTION)
        Store(redis_client, RETENTION).apply([new, old[0]])
        assert storedcall.state_json(redis_client, sid) == reduce(sid, history).to_json()
        counts = {slot: entry.deliveries for slot, entry in storedcall.entries(redis_client, sid).items()}
        # schema 2 counted the first event twice; this job delivered it once more, and the new one
        assert counts == {e.slot(): 3 if e is old[0] else 1 for e in history}
        assert redis_client.exists(f"callstate:events:{{{sid}}}", f"callstate:deliveries:{{{sid}}}") == 0

    def test_a_schema_2_worker_writing_a_moved_record_again_loses_nothing(
        self, redis_client: StoreClient
    ) -> None:
        """During a rolling upgrade a schema 2 worker may write a record that schema 3 already
        moved: its old keys again (with only what it added) and a JSON state. The next schema 3
        write combines both event sets, their counts added up."""
        sid = "CA" + "f" * 32
        rng = random.Random(32)
        history = make_history(rng, sid)
        while len(history) < 3:
            history = make_history(rng, sid)
        store = Store(redis_client, RETENTION)
        store.apply(history[:-1])  # schema 3
        # A schema 2 worker then adds the last event (and counts the first one's redelivery).
        storedcall.write_schema_2(redis_client, sid, [history[0], history[-1]], RETENTION)
        store.apply([history[1]])
        assert storedcall.state_json(redis_client, sid) == reduce(sid, history).to_json()
        counts = {slot: entry.deliveries for slot, entry in storedcall.entries(redis_client, sid).items()}
        # history[0]: once by schema 3, twice by schema 2; history[1]: twice by schema 3
        expected = {e.slot(): 1 for e in history} | {history[0].slot(): 3, history[1].slot(): 2}
        assert counts == expected
        assert redis_client.exists(f"callstate:events:{{{sid}}}", f"callstate:deliveries:{{{sid}}}") == 0


class TestCap:
    def test_new_events_over_the_cap_are_refused_logged_and_counted(
        self, redis_client: StoreClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With a cap of 20, the 21st distinct event of a call is not stored; the job's result,
        a warning naming the call, and the stats counter say so. Redeliveries of stored events and
        other calls are not affected."""
        sid, other = call_sid(0xCA9), call_sid(0xCAA)
        store = Store(redis_client, RETENTION, max_events=20)
        flood = [
            Event.create("call", call_params(sid, "in-progress", n % 60, Junk=str(n))) for n in range(30)
        ]
        first = store.apply(flood[:20])
        with caplog.at_level("WARNING", logger="callstate.worker"):
            second = store.apply([*flood, Event.create("call", call_params(other, "ringing", 1))])
        assert (first.new_events, first.over_cap) == (20, 0)
        assert (second.new_events, second.over_cap) == (1, 10)
        assert len(storedcall.events(redis_client, sid)) == 20
        assert counters(redis_client)[event_field(OVER_CAP)] == 10
        lines = [r.callstate_fields for r in caplog.records if r.getMessage() == "events_over_cap"]  # type: ignore[attr-defined]
        assert [(fields["call_sid"], fields["refused"]) for fields in lines] == [(sid, 10)]
        assert redis_client.hget(keys.call(other), "state") is not None


class TestIndexes:
    @pytest.mark.parametrize(
        ("timestamp", "score"),
        [
            ("Fri, 31 Dec 9999 23:59:59 +0000", NOW + INDEX_WINDOW),
            ("Thu, 01 Jan 1970 00:00:00 +0000", NOW - INDEX_WINDOW),
        ],
    )
    def test_index_scores_stay_near_processing_time_and_the_state_keeps_twilios_time(
        self, redis_client: StoreClient, timestamp: str, score: float
    ) -> None:
        """A signed Timestamp in year 9999 or 1970 is kept in the state, but every index scores the
        call within INDEX_WINDOW of processing time: it is pruned in time and does not jump the
        stuck sweep's queue."""
        sid = call_sid(0x1D0)
        params = [(n, timestamp if n == "Timestamp" else v) for n, v in call_params(sid, "ringing", 1)]
        Store(redis_client, RETENTION, clock=lambda: NOW).apply([Event.create("call", params)])
        state = storedcall.state(redis_client, sid)
        assert state["updated_at"][:4] in ("9999", "1970")
        b = bucket(redis_client, sid)
        for index in (keys.recent(b), keys.active(b), keys.by_status("ringing", b)):
            assert redis_client.zscore(index, sid) == score

    def test_final_calls_are_in_the_final_index_only(self, redis_client: StoreClient) -> None:
        """A call enters FINAL when it becomes final and leaves ACTIVE."""
        sid = call_sid(0xF1A)
        store = Store(redis_client, RETENTION)
        store.apply([Event.create("call", call_params(sid, "ringing", 1))])
        b = bucket(redis_client, sid)
        assert (
            redis_client.zscore(keys.active(b), sid) is None,
            redis_client.zscore(keys.final(b), sid),
        ) == (
            False,
            None,
        )
        store.apply([Event.create("call", call_params(sid, "completed", 2))])
        assert redis_client.zscore(keys.active(b), sid) is None
        assert redis_client.zscore(keys.final(b), sid) is not None


class TestTenants:
    def test_a_tenants_events_go_to_its_own_record(self, redis_client: StoreClient) -> None:
        """An event verified by a tenant's token never changes the main record of its CallSid; it
        builds the record <CallSid>:<tenant>, indexed under that name."""
        sid = call_sid(0x7E4)
        store = Store(redis_client, RETENTION)
        store.apply([Event.create("call", call_params(sid, "ringing", 1))])
        before = snapshot(redis_client, sid)
        tenant = "AC" + "7e" * 16
        forged = [(n, tenant if n == "AccountSid" else v) for n, v in call_params(sid, "completed", 999)]
        store.apply([Event.create("call", forged, tenant=tenant)])
        assert snapshot(redis_client, sid) == before
        record = keys.record(sid, tenant)
        state = storedcall.state(redis_client, record)
        assert (state["sid"], state["status"], state["account_sid"]) == (sid, "completed", tenant)
        assert redis_client.zscore(keys.final(bucket(redis_client, record)), record) is not None
