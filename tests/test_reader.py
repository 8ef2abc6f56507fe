"""callstate.reader reads what docs/redis-schema.md says is there, against a real redis-server.

Like tests/test_schema_doc.py, every expectation is read by following the document (its key names,
through ``doc_key``), so the reader cannot drift from the contract it implements.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from callstate.connection import StoreClient
from callstate.event import Event, parse_callback
from callstate.reader import Change, Follower, Reader, position_key
from callstate.status import PUBLISHED_STATUSES
from callstate.traffic import make_history
from tests.redisserver import RedisServer
from tests.test_schema_doc import doc_key, inflate, parse_event_set
from tests.twiliosign import call_params, call_sid
from workers.store import Store

RETENTION = 30 * 86_400
#: The Timestamp of call_params(sid, status, sequence) is 2026-09-01T12:00:<sequence>Z.
NOON = 1_788_264_000.0


def progress(sid: str, *statuses: str) -> list[Event]:
    return [parse_callback("call", call_params(sid, status, n)) for n, status in enumerate(statuses)]


def documented_state(client: StoreClient, sid: str) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        orjson.loads(
            inflate(client, cast(bytes, client.hget(doc_key("callstate:call:", record=sid), "state")))
        ),
    )


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    # Processed at NOON, when the calls happen: index scores stay within a day of processing time.
    store = Store(redis_client, RETENTION, clock=lambda: NOON)
    store.write_schema_version()
    return store


class TestCalls:
    def test_a_call_is_its_documented_state_and_version(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """Reader.call answers the `state` JSON and `version` of the call hash."""
        sid = "CA" + "7" * 32
        for event in make_history(random.Random(3), sid):
            store.apply([event])
        call = Reader(redis_client).call(sid)
        assert call is not None
        assert call.state == documented_state(redis_client, sid)
        version = redis_client.hget(doc_key("callstate:call:", record=sid), "version")
        assert call.version == int(cast(bytes, version))
        assert Reader(redis_client).schema_version() == int(
            cast(bytes, redis_client.get(doc_key("callstate:{callstate}:schema")))
        )

    def test_deliveries_are_counted_by_the_identity_of_a_timeline_entry(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """Reader.deliveries adds up the documented counts of the call's event slots by
        (SequenceNumber, CallStatus), the identity of an entry of the state's `events`."""
        sid = call_sid(6)
        events = progress(sid, "initiated", "ringing")
        store.apply(events)
        store.apply([events[1]])  # Twilio sent `ringing` twice
        assert Reader(redis_client).deliveries(sid) == {(0, "initiated"): 1, (1, "ringing"): 2}
        stored = cast(bytes, redis_client.hget(doc_key("callstate:call:", record=sid), "events"))
        documented = parse_event_set(inflate(redis_client, stored))
        assert sum(deliveries for _, deliveries, _ in documented.values()) == 3
        assert Reader(redis_client).deliveries(call_sid(404)) == {}

    def test_an_unknown_call_is_none(self, redis_client: redis.Redis) -> None:
        """A CallSid the store does not hold reads as None, not an error."""
        assert Reader(redis_client).call(call_sid(404)) is None


class TestPages:
    def test_recent_pages_are_newest_first_and_cover_the_index_once(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """Paging through `recent` yields every indexed call once, by descending score."""
        sids = [call_sid(n) for n in range(23)]
        for n, sid in enumerate(sids):
            # Call n's latest Timestamp is 12:00:<n % 5>: ties and order both occur.
            store.apply(
                progress(sid, *["initiated", "ringing", "in-progress", "completed", "queued"][: n % 5 + 1])
            )
        reader = Reader(redis_client)
        seen: list[str] = []
        offset = 0
        while True:
            page = reader.page("recent", offset=offset, limit=5)
            assert page.total == 23
            if not page.calls:
                break
            seen += [call.sid for call in page.calls]
            offset += 5
        documented = [
            m.decode()
            for m in cast(
                list[bytes],
                redis_client.zrevrange(doc_key("callstate:{callstate:<bucket>}:recent", bucket="0"), 0, -1),
            )
        ]
        assert seen == documented
        assert sorted(seen) == sorted(sids)

    def test_active_and_each_status_list_what_the_states_say(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """`active` holds the non-final calls; a status page holds the calls of that status."""
        outcomes = {
            call_sid(1): ("initiated",),
            call_sid(2): ("initiated", "ringing"),
            call_sid(3): ("initiated", "busy"),
            call_sid(4): ("initiated", "ringing", "in-progress", "completed"),
        }
        for sid, statuses in outcomes.items():
            store.apply(progress(sid, *statuses))
        reader = Reader(redis_client)
        active = {call.sid for call in reader.page("active", limit=100).calls}
        assert active == {sid for sid in outcomes if not documented_state(redis_client, sid)["final"]}
        for status in PUBLISHED_STATUSES:
            listed = {call.sid for call in reader.page(status, limit=100).calls}
            assert listed == {
                sid for sid in outcomes if (documented_state(redis_client, sid)["status"] or "none") == status
            }

    def test_stuck_calls_are_active_calls_whose_latest_event_is_old(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """With the clock at noon + stuck_after + 2 s, calls last heard before noon + 2 s are stuck."""
        store.apply(progress(call_sid(1), "initiated"))  # latest event 12:00:00
        store.apply(progress(call_sid(2), "initiated", "ringing", "in-progress"))  # 12:00:02
        store.apply(progress(call_sid(3), "initiated", "ringing", "in-progress", "completed"))  # final
        reader = Reader(redis_client, stuck_after=600, clock=lambda: NOON + 601)
        assert [call.sid for call in reader.page("stuck").calls] == [call_sid(1)]
        assert reader.counts().stuck == 1
        later = Reader(redis_client, stuck_after=600, clock=lambda: NOON + 700)
        assert [call.sid for call in later.page("stuck").calls] == [call_sid(2), call_sid(1)]

    def test_an_unknown_list_is_refused(self, redis_client: redis.Redis) -> None:
        """A view that is neither a list nor a status is a ValueError, never a key made up from it."""
        with pytest.raises(ValueError, match="no such list"):
            Reader(redis_client).page("callstate:{callstate}:published")


class TestCounts:
    def test_counts_are_the_cardinalities_of_the_documented_indexes(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """counts() equals ZCARD of each status index, of `active` and of `recent`."""
        rng = random.Random(11)
        for n in range(30):
            store.apply(make_history(rng, call_sid(n))[: rng.randint(1, 6)])
        counts = Reader(redis_client).counts()
        for status in PUBLISHED_STATUSES:
            assert counts.by_status[status] == redis_client.zcard(
                doc_key("callstate:{callstate:<bucket>}:status:", bucket="0", status=status)
            )
        assert counts.active == redis_client.zcard(
            doc_key("callstate:{callstate:<bucket>}:active", bucket="0")
        )
        assert (
            counts.recent
            == redis_client.zcard(doc_key("callstate:{callstate:<bucket>}:recent", bucket="0"))
            == 30
        )
        assert sum(counts.by_status.values()) == 30


def stream_entries(client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        client.xrange(doc_key("callstate:{callstate:<bucket>}:changes", bucket="0")),
    )


class TestFollower:
    def test_changes_are_the_documented_entries(self, redis_client: redis.Redis, store: Store) -> None:
        """Reader.changes decodes each entry's call, version, status (`none` -> None) and final."""
        recording = [
            ("AccountSid", "AC" + "a" * 32),
            ("CallSid", call_sid(9)),
            ("RecordingSid", "RE" + "b" * 32),
            ("RecordingStatus", "completed"),
        ]
        store.apply([parse_callback("recording", recording)])
        store.apply(progress(call_sid(9), "initiated", "busy"))
        changes = Reader(redis_client).changes("0-0")
        entries = stream_entries(redis_client)
        assert [c.id for c in changes] == [entry_id.decode() for entry_id, _ in entries]
        assert [(c.call_sid, c.version, c.status, c.final) for c in changes] == [
            (call_sid(9), 1, None, False),
            (call_sid(9), 2, "busy", True),
        ]

    def test_following_from_a_saved_position_yields_only_later_changes(
        self, redis_client: redis.Redis, store: Store
    ) -> None:
        """A follower built on another's saved position starts exactly where that one stopped."""
        first = Follower(Reader(redis_client), "0-0")
        store.apply(progress(call_sid(1), "initiated"))
        assert [(c.call_sid, c.version) for c in first.poll(block=1)] == [(call_sid(1), 1)]
        saved = first.position
        store.apply(progress(call_sid(2), "initiated"))
        resumed = Follower(Reader(redis_client), saved)
        assert [(c.call_sid, c.version) for c in resumed.poll(block=1)] == [(call_sid(2), 1)]

    def test_dollar_means_changes_after_the_first_poll(self, redis_client: redis.Redis, store: Store) -> None:
        """A follower from `$` skips what was there and gets what comes after, even between polls."""
        store.apply(progress(call_sid(1), "initiated"))
        follower = Follower(Reader(redis_client))
        assert follower.poll(block=0.01) == []
        store.apply(progress(call_sid(2), "initiated"))
        assert [c.call_sid for c in follower.poll(block=1)] == [call_sid(2)]

    def test_repeats_and_late_entries_are_dropped(self, redis_client: redis.Redis, store: Store) -> None:
        """An entry at or below a version already seen for its call is dropped (the version rule)."""
        sid = call_sid(5)
        for event in progress(sid, "initiated", "ringing"):
            store.apply([event])
        stream = doc_key("callstate:{callstate:<bucket>}:changes", bucket="0")
        # What a crashed worker's retry and a slow racing worker leave behind: a repeat of
        # version 1 and a late version 1 after version 2.
        for version, status in ((1, "initiated"), (2, "ringing"), (1, "initiated")):
            redis_client.xadd(stream, {"call": sid, "version": version, "status": status, "final": 0})
        follower = Follower(Reader(redis_client), "0-0")
        assert [(c.version, c.status) for c in follower.poll(block=1)] == [(1, "initiated"), (2, "ringing")]

    def test_a_full_read_says_more_was_waiting(self, redis_client: redis.Redis, store: Store) -> None:
        """`saturated` is true when a poll read as many entries as it asked for, false after."""
        for n in range(3):
            store.apply(progress(call_sid(n), "initiated"))
        follower = Follower(Reader(redis_client), "0-0")
        assert len(follower.poll(block=1, count=2)) == 2
        assert follower.saturated
        assert len(follower.poll(block=1, count=2)) == 1
        assert not follower.saturated

    def test_a_redis_restart_costs_a_pause_and_nothing_else(self, tmp_path: Path) -> None:
        """Polls while Redis is down return [] after a pause; after the restart the follower goes
        on from the same position: changes made before and after it arrive once each."""
        server = RedisServer(tmp_path / "redis")
        server.start()
        try:
            client = server.client()
            pauses: list[float] = []
            store = Store(client, RETENTION)
            follower = Follower(Reader(client), "0-0", sleep=pauses.append)
            store.apply(progress(call_sid(1), "initiated"))
            assert [c.call_sid for c in follower.poll(block=1)] == [call_sid(1)]
            store.apply(progress(call_sid(2), "initiated"))  # written, not yet read
            server.stop()
            assert follower.poll(block=1) == []
            assert follower.poll(block=1) == []
            down = not follower.connected
            assert down
            assert pauses == [0.1, 0.2]
            server.start()  # same port and directory: the AOF is replayed
            store = Store(client, RETENTION)
            store.apply(progress(call_sid(3), "initiated"))
            got: list[str] = []
            while len(got) < 2:
                got += [c.call_sid for c in follower.poll(block=1)]
            assert got == [call_sid(2), call_sid(3)]
            assert follower.connected
            client.close()
        finally:
            server.stop()


def changes_of(versions: list[tuple[int, int]]) -> Iterator[Change]:
    for n, (call, version) in enumerate(versions):
        yield Change(f"1-{n}", call_sid(call), version, "ringing", False)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6)), max_size=40), st.integers(1, 5))
def test_the_version_rule_delivers_rising_versions_and_each_maximum(
    entries: list[tuple[int, int]], remember: int
) -> None:
    """For any order and repetition of entries, each call's delivered versions strictly rise and the
    highest version of each call is delivered (when it remembers every call)."""
    # fresh() is pure: no Redis behind this reader.
    follower = Follower(Reader(cast(redis.Redis, object())), "0-0", remember=remember)
    delivered = [c for c in changes_of(entries) if follower.fresh(c)]
    by_call: dict[str, list[int]] = {}
    for change in delivered:
        by_call.setdefault(change.call_sid, []).append(change.version)
    if remember >= 4:
        for versions in by_call.values():
            assert versions == sorted(set(versions))
        assert {sid: max(v) for sid, v in by_call.items()} == {
            call_sid(c): max(v for cc, v in entries if cc == c) for c, _ in entries
        }
    else:  # bounded memory: a forgotten call may be delivered again, but nothing is lost
        assert {c.call_sid for c in delivered} == {call_sid(c) for c, _ in entries}


@pytest.mark.parametrize("position", ["", "abc", "1-x", "-1", "1-2-3", "9" * 30])
def test_a_malformed_position_is_refused(position: str) -> None:
    """Positions may come from a browser (Last-Event-ID): anything but a stream ID is a ValueError."""
    with pytest.raises(ValueError, match="not a stream ID"):
        position_key(position)


class TestOnCluster:
    """The reader on a 3-master Redis Cluster, where the store keeps 16 index buckets."""

    @pytest.fixture
    def cluster_store(self, cluster_client: RedisCluster) -> Store:
        store = Store(cluster_client, RETENTION, clock=lambda: NOON)
        store.write_schema_version()
        return store

    def test_pages_and_counts_merge_every_bucket(
        self, cluster_client: RedisCluster, cluster_store: Store
    ) -> None:
        """40 calls over 16 buckets: a page is the newest calls of all of them, counts add up."""
        for n in range(1, 41):
            cluster_store.apply(progress(call_sid(n), *("initiated", "ringing", "in-progress")[: 1 + n % 3]))
        reader = Reader(cluster_client)
        assert reader.buckets() == 16
        expected = sorted(
            (call_sid(n) for n in range(1, 41)),
            key=lambda sid: (documented_state(cluster_client, sid)["updated_at"], sid),
            reverse=True,
        )
        assert [call.sid for call in reader.page("recent", limit=100).calls] == expected
        assert [call.sid for call in reader.page("recent", offset=10, limit=5).calls] == expected[10:15]
        counts = reader.counts()
        assert counts.recent == 40
        assert counts.by_status["ringing"] == sum(1 for n in range(1, 41) if n % 3 == 1)

    def test_a_follower_keeps_one_position_per_bucket(
        self, cluster_client: RedisCluster, cluster_store: Store
    ) -> None:
        """Every change once from 0-0; a follower resumed from the saved position (16 IDs) gets
        exactly the later ones, whichever buckets they land in."""
        first = Follower(Reader(cluster_client), "0-0")
        for n in range(1, 21):
            cluster_store.apply(progress(call_sid(n), "initiated"))
        got = [(c.call_sid, c.version) for c in first.poll(block=1, count=1000)]
        assert sorted(got) == [(call_sid(n), 1) for n in range(1, 21)]
        saved = first.position
        assert len(saved.split(",")) == 16
        for n in range(1, 21):
            cluster_store.apply(progress(call_sid(n), "initiated", "ringing"))
        resumed = Follower(Reader(cluster_client), saved)
        again = [(c.call_sid, c.version) for c in resumed.poll(block=1, count=1000)]
        assert sorted(again) == [(call_sid(n), 2) for n in range(1, 21)]

    def test_waiting_for_a_change_sees_it_in_any_bucket(
        self, cluster_client: RedisCluster, cluster_store: Store
    ) -> None:
        """changes(block=...) from the current position returns a change written meanwhile."""
        reader = Reader(cluster_client)
        position = reader.last_position()
        writer = threading.Timer(0.2, lambda: cluster_store.apply(progress(call_sid(7), "initiated")))
        writer.start()
        try:
            changes = reader.changes(position, block=10)
        finally:
            writer.join()
        assert [(c.call_sid, c.version) for c in changes] == [(call_sid(7), 1)]
