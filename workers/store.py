"""The store: events in, reconciled state out, in Redis (layout in callstate.keys).

:meth:`Store.apply` takes a batch of events and, per call record (:meth:`Event.record`: the CallSid,
with the tenant's AccountSid when a subaccount's token verified the events):

1. reads each record's event set, state and version (one field each of its call hash), and the
   published version of each, pipelined for the whole batch;
2. adds the events to the set (:func:`callstate.eventset.add`: one event per slot,
   :meth:`Event.slot`; a duplicate or a re-split changes nothing but the delivery count unless it
   is preferred, :meth:`Event.preference`; at most ``max_events`` slots per record) and reduces the
   set to a state (pure: :func:`workers.reduce.reduce`);
3. writes the set, and the state if it changed, with a compare-and-set on the set and the version
   read (a Lua script that touches only that call's hash), retrying the calls that moved under it;
4. publishes every new version to the global indexes and the change stream with one script per
   batch that skips versions already published; the batch's counters (events new and duplicate,
   state changes, the lag histogram: :mod:`callstate.counters`) go in the same round trip, or
   alone when there is nothing to publish.

Why it is safe with any number of workers, any order and any repeats: the event set only grows,
and set and state are written together, only over the set and version they were computed from, so
a write based on a stale read fails and is recomputed from a fresher read: the stored state is
always the reduction of the stored set. Step 4 is idempotent and ordered by version, and
the ``published`` hash is the outbox: a version written but never published (a worker died between
3 and 4, or the publish failed) is published when the job is retried (RQ retries a job that
raised or whose worker died) or by the next job that touches the call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Final

import orjson
from redis.cluster import RedisCluster

from callstate import compression, eventset, keys
from callstate.buckets import CLUSTER_BUCKETS, bucket_of, read_count
from callstate.connection import StoreClient
from callstate.counters import add_lags, event_field, state_change_field
from callstate.errors import StoreConflict, UnreadableValue
from callstate.event import Event
from callstate.logs import log_event
from callstate.status import NO_STATUS, PUBLISHED_STATUSES
from workers import codec, schema2
from workers.reduce import reduce
from workers.shardpipe import Command, execute
from workers.state import CallState

logger = logging.getLogger("callstate.worker")

#: A call whose version keeps moving under us this many times in one job is left to a retry.
MAX_CAS_ROUNDS: Final = 20


@dataclass(slots=True)
class ApplyResult:
    """What one :meth:`Store.apply` did, for the job's log line and for tests."""

    events: int = 0
    calls: int = 0
    new_events: int = 0
    #: Events that took the slot of a less preferred split of the same signed callback.
    replaced: int = 0
    #: Events refused because their call record already holds ``max_events`` slots.
    over_cap: int = 0
    #: Records whose state changed.
    changed: list[str] = field(default_factory=list)
    published: int = 0
    conflicts: int = 0
    orphan_recordings: int = 0
    #: Records whose stored values this version cannot decode, with why: their events were not
    #: applied (:meth:`Store.apply` raises once the others are done).
    unreadable: dict[str, str] = field(default_factory=dict)
    #: What was added to the deployment's counters (:mod:`callstate.counters`).
    counts: dict[str, int] = field(default_factory=dict)


#: Distinct events (slots) kept per call record. Twilio sends a handful per call, a long call with
#: many recordings a few dozen; the cap bounds what one job reads and reduces for one call, so a
#: flood of signed events on one call cannot slow every job that touches it.
DEFAULT_MAX_EVENTS: Final = 200

#: Index scores stay within this many seconds of processing time: a signed Timestamp in year 9999
#: would never be pruned, one from 1970 would jump the stuck sweep's queue. The state keeps
#: Twilio's time (docs/redis-schema.md, "Index scores").
INDEX_WINDOW: Final = 86_400

#: The counter (:func:`callstate.counters.event_field`) of events refused because their call
#: record already held ``max_events`` slots; ``new`` counts the ones stored (or that replaced a
#: re-split of themselves), ``duplicate`` the rest (redeliveries, and re-splits that lost).
OVER_CAP: Final = "over_cap"
NEW: Final = "new"


def index_score(updated_at: float | None, now: float) -> float:
    """The indexes' score of a state updated at ``updated_at`` (Unix seconds), seen at ``now``."""
    if updated_at is None:
        return now
    return min(max(updated_at, now - INDEX_WINDOW), now + INDEX_WINDOW)


def call_sid_of(record: str) -> str:
    """The CallSid of a call record (``CA…`` or ``CA…:AC…``)."""
    return record.partition(":")[0]


def tenant_of(record: str) -> str | None:
    """The tenant of a call record, ``None`` for the main account's."""
    return record.partition(":")[2] or None


@dataclass(frozen=True, slots=True)
class _Read:
    """One record as read: its event set (decoded, and as stored, for the compare-and-set), its
    state's JSON and its version."""

    entries: dict[str, eventset.Entry]
    stored_events: bytes | None
    state: bytes | None
    version: int
    #: Written by schema 2 (its state is JSON): its events may still be in schema 2's keys.
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class _Write:
    """What one record's compare-and-set writes: the set (``None``: unchanged), the state JSON
    (``None``: unchanged), and what adding the events did."""

    events: bytes | None
    state: bytes | None
    added: eventset.Added


#: The call hash's fields a job reads, in this order (docs/redis-schema.md).
_FIELDS: Final = ("events", "state", "version")


def _parse_read(reply: list[bytes | None]) -> _Read:
    stored_events, state, version = reply
    return _Read(
        entries=eventset.load(stored_events),
        stored_events=stored_events,
        state=None if state is None else compression.state_json(state),
        version=0 if version is None else int(version),
        legacy=state is not None and compression.is_legacy_state(state),
    )


def _script(name: str) -> str:
    return files("workers").joinpath(name).read_text()


class Store:
    """The Redis-backed reconciler. Cheap to build; one per worker process."""

    def __init__(
        self,
        redis: StoreClient,
        retention_seconds: int,
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.retention = retention_seconds
        self.max_events = max_events
        self.clock = clock
        self._add = redis.register_script(_script("add.lua"))
        self._commit_script = redis.register_script(_script("commit.lua"))
        self._publish = redis.register_script(_script("publish.lua"))
        self._buckets: int | None = None

    def write_schema_version(self) -> None:
        """Write the schema version, the compression dictionaries readers need, and the bucket
        count if the store has none yet."""
        for dictionary_id in compression.DICTIONARIES:
            self.redis.set(keys.dictionary(dictionary_id), compression.dictionary_bytes(dictionary_id))
        self.redis.set(keys.SCHEMA, keys.SCHEMA_VERSION)
        self._buckets = self._bucket_count()

    @property
    def buckets(self) -> int:
        """How many buckets the indexes and the change stream are split into (callstate.buckets):
        what the store says, read once. The first worker of an empty store chooses: 1 on a plain
        Redis, :data:`~callstate.buckets.CLUSTER_BUCKETS` on a cluster."""
        if self._buckets is None:
            self._buckets = self._bucket_count()
        return self._buckets

    def bucket(self, record: str) -> int:
        """The bucket of a call record's index entries and stream entries."""
        return bucket_of(record, self.buckets)

    def _bucket_count(self) -> int:
        chosen = CLUSTER_BUCKETS if isinstance(self.redis, RedisCluster) else 1
        self.redis.set(keys.BUCKETS, chosen, nx=True)
        return read_count(self.redis, keys.BUCKETS)

    def apply(self, events: Iterable[Event]) -> ApplyResult:
        """Add ``events`` to the store and bring every touched call record up to date. Idempotent."""
        result = ApplyResult()
        by_call: dict[str, list[Event]] = defaultdict(list)
        orphans: list[Event] = []
        every: list[Event] = []
        for event in events:
            every.append(event)
            record = event.record()
            if record is None:
                orphans.append(event)
            else:
                by_call[record].append(event)
        result.events = len(every)
        if orphans:
            self._store_orphans(orphans, result)
            result.orphan_recordings = len(orphans)
        to_publish = self._reconcile(by_call, result) if by_call else {}
        _count_stored(result.counts, every, result)
        result.published = self._publish_versions(to_publish, result.counts)
        _raise_unreadable(result)
        return result

    def refresh(self, call_sids: Iterable[str]) -> ApplyResult:
        """Recompute the state of call records ``call_sids`` from their stored events
        (``callstate replay``).

        Writes only where the result differs, e.g. after a reducer fix; publishes any version that
        was written but not published. Idempotent like :meth:`apply`.
        """
        result = ApplyResult()
        by_call: dict[str, list[Event]] = {sid: [] for sid in call_sids}
        to_publish = self._reconcile(by_call, result) if by_call else {}
        result.published = self._publish_versions(to_publish, result.counts)
        _raise_unreadable(result)
        return result

    def _reconcile(
        self, by_call: dict[str, list[Event]], result: ApplyResult
    ) -> dict[str, tuple[int, CallState]]:
        """Steps 1 to 3 for ``by_call``, counted in ``result``; the versions to publish."""
        result.calls = len(by_call)
        additions = {sid: [self._addition(event) for event in events] for sid, events in by_call.items()}
        reads, published = self._read(list(by_call), result)
        to_publish: dict[str, tuple[int, CallState]] = {}
        pending = [sid for sid in by_call if sid in reads]
        for _ in range(MAX_CAS_ROUNDS):
            writes: dict[str, _Write] = {}
            states: dict[str, CallState] = {}
            for sid in pending:
                read = reads[sid]
                # Outbox: a version written but never published (its worker died) goes out now.
                if read.state is not None and read.version > published.get(sid, 0):
                    to_publish[sid] = (read.version, CallState.from_json(read.state))
                states[sid], write = self._prepare(sid, read, additions[sid])
                if write.events is not None or write.state is not None:
                    writes[sid] = write
            won = self._commit(writes, reads, states)
            for sid, version in won.items():
                write = writes[sid]
                self._count_added(write.added, result, call_sid=call_sid_of(sid), tenant=tenant_of(sid))
                if write.state is None:
                    continue
                to_publish[sid] = (version, states[sid])
                result.changed.append(sid)
                change = state_change_field(states[sid].status or NO_STATUS)
                result.counts[change] = result.counts.get(change, 0) + 1
            losers = [sid for sid in writes if sid not in won]
            if not losers:
                break
            result.conflicts += len(losers)
            reads |= self._read(losers, result)[0]
            pending = [sid for sid in losers if sid in reads]
        else:
            raise StoreConflict(len(losers))
        return to_publish

    # -- steps -----------------------------------------------------------------------------

    def _prepare(self, sid: str, read: _Read, additions: list[eventset.Addition]) -> tuple[CallState, _Write]:
        """Step 2 for one record: its new state, and what to write (pure, given ``read``)."""
        entries = dict(read.entries)
        added = eventset.add(entries, additions, cap=self.max_events, width=codec.PREFERENCE_WIDTH)
        events = [codec.decode(entry.value) for entry in entries.values()]
        state = reduce(call_sid_of(sid), events, tenant_of(sid))
        raw = state.to_json()
        return state, _Write(
            events=eventset.dump(entries) if additions else None,
            state=raw if raw != read.state else None,
            added=added,
        )

    @staticmethod
    def _addition(event: Event) -> eventset.Addition:
        return eventset.Addition(codec.field(event), codec.encode(event), event.received_at)

    def _read(self, sids: list[str], result: ApplyResult) -> tuple[dict[str, _Read], dict[str, int]]:
        """Step 1: each record's call hash, and its published version, in one round trip. A record
        whose values cannot be decoded is left out, named in ``result.unreadable`` and logged."""
        commands = [Command(keys.call(sid), ("HMGET", keys.call(sid), *_FIELDS)) for sid in sids]
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for sid in sids:
            by_bucket[self.bucket(sid)].append(sid)
        for bucket, members in by_bucket.items():
            commands.append(Command(keys.published(bucket), ("HMGET", keys.published(bucket), *members)))
        replies = iter(self._execute(commands))
        reads: dict[str, _Read] = {}
        for sid in sids:
            reply = next(replies)
            try:
                reads[sid] = _parse_read(reply)
            except UnreadableValue as exc:
                result.unreadable[sid] = str(exc)
                log_event(
                    logger, "record_unreadable", logging.ERROR, call_sid=call_sid_of(sid), error=str(exc)
                )
        published: dict[str, int] = {}
        for members in by_bucket.values():
            for sid, raw in zip(members, next(replies), strict=True):
                if raw is not None:
                    published[sid] = int(raw.split(b":", 1)[0])
        legacy = [sid for sid, read in reads.items() if read.legacy]
        if legacy:
            reads |= self._read_legacy({sid: reads[sid] for sid in legacy})
        return reads, published

    def _read_legacy(self, reads: dict[str, _Read]) -> dict[str, _Read]:
        """``reads`` with the events that schema 2's keys still hold for them, in one more round
        trip (a store upgraded from schema 2: records not migrated yet, or touched by a schema 2
        worker still running during the upgrade). The next write of a record deletes those keys
        (commit.lua)."""
        commands: list[Command] = []
        for sid in reads:
            for key in (schema2.old_events(sid), schema2.old_deliveries(sid)):
                commands.append(Command(key, ("HGETALL", key)))
        replies = iter(self._execute(commands))
        width = codec.PREFERENCE_WIDTH
        out: dict[str, _Read] = {}
        for sid, read in reads.items():
            entries = dict(read.entries)
            for slot, old in schema2.entries_of(next(replies), next(replies)).items():
                current = entries.get(slot)
                entries[slot] = old if current is None else eventset.combine(current, old, width=width)
            out[sid] = dataclasses.replace(read, entries=entries)
        return out

    def _add_command(self, key: str, events: Sequence[Event]) -> Command:
        """``add.lua`` for ``events`` into the orphan recording hash ``key``."""
        args: list[str | bytes | int | float] = [self.max_events, codec.PREFERENCE_WIDTH]
        for event in events:
            args += [codec.field(event), codec.encode(event)]
        return Command(key, ("EVALSHA", self._add.sha, 1, key, *args), writes=True)

    def _count_added(self, added: eventset.Added, result: ApplyResult, **names: str | None) -> None:
        """Count what adding events to one record's set did (``names`` say whose, for the log)."""
        result.new_events += added.added + added.replaced
        result.replaced += added.replaced
        if added.refused:
            result.over_cap += added.refused
            # One line per job and record: a flood is visible without a line per event.
            log_event(
                logger,
                "events_over_cap",
                logging.WARNING,
                **names,
                refused=added.refused,
                cap=self.max_events,
            )

    def _execute(self, commands: list[Command]) -> list[Any]:
        """One round trip (one per master on a cluster: workers.shardpipe). A script Redis lost
        (a restart, a new master) is loaded and the round trip repeated: every command the store
        sends is idempotent."""
        return execute(self.redis, commands, (self._add, self._commit_script, self._publish))

    def _commit(
        self, writes: dict[str, _Write], reads: dict[str, _Read], states: dict[str, CallState]
    ) -> dict[str, int]:
        """Step 3: compare-and-set each record over the set and version read; the winners, with
        their version after the write."""
        if not writes:
            return {}
        order = list(writes)
        commands: list[Command] = []
        for sid in order:
            read, write = reads[sid], writes[sid]
            # TTLs are set when a call appears and again when it becomes final: enough to expire
            # every call `retention` after its last meaningful change, at no cost per event.
            was_final = read.state is not None and orjson.loads(read.state)["final"]
            ttl = self.retention if read.state is None or states[sid].final != was_final else 0
            state = b"" if write.state is None else compression.store_state(write.state)
            call = keys.call(sid)
            args = (
                "EVALSHA",
                self._commit_script.sha,
                3,
                call,
                schema2.old_events(sid),
                schema2.old_deliveries(sid),
                read.version,
                read.stored_events or b"",
                write.events or b"",
                state,
                ttl,
            )
            commands.append(Command(call, args, writes=True))
        won: dict[str, int] = {}
        for sid, version in zip(order, self._execute(commands), strict=True):
            if version >= 0:
                won[sid] = int(version)
        return won

    def _publish_versions(self, entries: dict[str, tuple[int, CallState]], counts: dict[str, int]) -> int:
        """Step 4: one publish script per bucket touched, in one round trip (one per master on a
        cluster); then ``counts`` added to the counters. The number of stream entries added."""
        now = self.clock()
        minid = max(0, int((now - self.retention) * 1000))
        groups: dict[int, list[str | int | float]] = defaultdict(list)
        for sid, (version, state) in entries.items():
            updated = state.updated_at.timestamp() if state.updated_at is not None else None
            status = state.status or NO_STATUS
            groups[self.bucket(sid)] += [sid, version, status, int(state.final), index_score(updated, now)]
        commands: list[Command] = []
        for bucket, args in groups.items():
            script_keys = index_keys(bucket, with_stream=True)
            command = ("EVALSHA", self._publish.sha, len(script_keys), *script_keys, minid, *args)
            commands.append(Command(script_keys[0], command, writes=True))
        added = sum(int(reply) for reply in self._execute(commands))
        # Counters apart: a round trip repeated after a lost script must not count twice.
        increments = [
            Command(keys.METRICS, ("HINCRBY", keys.METRICS, field, amount), writes=True)
            for field, amount in counts.items()
            if amount
        ]
        self._execute(increments)
        return added

    def _store_orphans(self, events: Sequence[Event], result: ApplyResult) -> None:
        """Recording callbacks naming no call (conference recordings) are kept, per recording,
        with the same slots and cap as a call's events."""
        by_key: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            record = keys.record(event.recording_sid or "unknown", event.tenant)
            by_key[keys.orphan_recording(record)].append(event)

        commands: list[Command] = []
        for key, group in by_key.items():
            commands.append(self._add_command(key, group))
            commands.append(Command(key, ("EXPIRE", key, self.retention), writes=True))
        replies = self._execute(commands)
        for group, reply in zip(by_key.values(), replies[0::2], strict=True):
            added = eventset.Added(*(int(n) for n in reply))
            self._count_added(added, result, recording_sid=group[0].recording_sid, tenant=group[0].tenant)


def index_keys(bucket: int, *, with_stream: bool = False) -> list[str]:
    """The index keys of ``bucket`` in the order ``publish.lua`` (with the stream) and the pruning
    script (without) take them: published, recent, active, final, [changes,] then one per status."""
    head = [keys.published(bucket), keys.recent(bucket), keys.active(bucket), keys.final(bucket)]
    if with_stream:
        head.append(keys.changes(bucket))
    return head + [keys.by_status(status, bucket) for status in PUBLISHED_STATUSES]


def _raise_unreadable(result: ApplyResult) -> None:
    """Fail the job once every readable record is done, so that the events of the unreadable ones
    are not lost: RQ retries the job and keeps it in its failed registry after the last retry."""
    if result.unreadable:
        names = ", ".join(sorted(result.unreadable)[:5])
        raise UnreadableValue(
            f"{len(result.unreadable)} call record(s) unreadable ({names}), events not applied"
        )


def _count_stored(counts: dict[str, int], events: Sequence[Event], result: ApplyResult) -> None:
    """Count ``events`` by what became of them (``result``: new, over the cap, else duplicates or
    re-splits of stored ones), and their lags until now."""
    if not events:
        return
    refused = result.over_cap
    new = result.new_events
    for name, amount in ((NEW, new), (OVER_CAP, refused), ("duplicate", len(events) - new - refused)):
        if amount:
            counts[event_field(name)] = counts.get(event_field(name), 0) + amount
    now = time.time()
    add_lags(counts, [now - e.received_at for e in events if e.received_at is not None])
