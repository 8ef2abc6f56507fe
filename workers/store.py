"""The store: events in, reconciled state out, in Redis (layout in callstate.keys).

:meth:`Store.apply` takes a batch of events and, per call:

1. adds them to the call's event set (a hash keyed by :meth:`Event.store_key`; a duplicate
   changes nothing) and reads the set back with the stored state, pipelined for the whole batch;
2. reduces the set to a state (pure: :func:`workers.reduce.reduce`);
3. writes the state only if it changed, with a compare-and-set on the call's version (a Lua script
   that touches only that call's keys), retrying the calls whose version moved under it;
4. publishes every new version to the global indexes and the change stream with one script per
   batch that skips versions already published; the batch's counters (events new and duplicate,
   state changes, the lag histogram: :mod:`callstate.counters`) go in the same round trip, or
   alone when there is nothing to publish.

Why it is safe with any number of workers, any order and any repeats: the event set only grows;
a state is written only over the version it was computed from, so a write based on a stale read
fails and is recomputed from a fresher read; the last successful write was computed from a set that
includes every event whose writer saw no change. Step 4 is idempotent and ordered by version, and
the ``published`` hash is the outbox: a version written but never published (a worker died between
3 and 4, or the publish failed) is published when the job is retried (RQ retries a job that
raised or whose worker died) or by the next job that touches the call.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Final

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from callstate import keys
from callstate.counters import add_lags, event_field, hincrby_all, state_change_field
from callstate.errors import StoreConflict
from callstate.event import Event
from callstate.status import NO_STATUS, PUBLISHED_STATUSES
from workers import deliveries
from workers.reduce import reduce
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
    changed: list[str] = field(default_factory=list)
    published: int = 0
    conflicts: int = 0
    orphan_recordings: int = 0
    #: What was added to the deployment's counters (:mod:`callstate.counters`).
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Read:
    events: list[Event]
    state: bytes | None
    version: int


def _script(name: str) -> str:
    return files("workers").joinpath(name).read_text()


class Store:
    """The Redis-backed reconciler. Cheap to build; one per worker process."""

    def __init__(self, redis: Redis, retention_seconds: int) -> None:
        self.redis = redis
        self.retention = retention_seconds
        self._commit = redis.register_script(_script("commit.lua"))
        self._publish = redis.register_script(_script("publish.lua"))

    def write_schema_version(self) -> None:
        self.redis.set(keys.SCHEMA, keys.SCHEMA_VERSION)

    def apply(self, events: Iterable[Event]) -> ApplyResult:
        """Add ``events`` to the store and bring every touched call up to date. Idempotent."""
        result = ApplyResult()
        by_call: dict[str, list[Event]] = defaultdict(list)
        orphans: list[Event] = []
        for event in events:
            result.events += 1
            sid = event.call_sid
            if sid is None:
                orphans.append(event)
            else:
                by_call[sid].append(event)
        if orphans:
            _count_stored(result.counts, orphans, self._store_orphans(orphans))
            result.orphan_recordings = len(orphans)
        to_publish = self._reconcile(by_call, result) if by_call else {}
        result.published = self._publish_versions(to_publish, result.counts)
        return result

    def refresh(self, call_sids: Iterable[str]) -> ApplyResult:
        """Recompute the state of ``call_sids`` from their stored events (``callstate replay``).

        Writes only where the result differs, e.g. after a reducer fix; publishes any version that
        was written but not published. Idempotent like :meth:`apply`.
        """
        result = ApplyResult()
        by_call: dict[str, list[Event]] = {sid: [] for sid in call_sids}
        to_publish = self._reconcile(by_call, result) if by_call else {}
        result.published = self._publish_versions(to_publish, result.counts)
        return result

    def _reconcile(
        self, by_call: dict[str, list[Event]], result: ApplyResult
    ) -> dict[str, tuple[int, CallState]]:
        """Steps 1 to 3 for ``by_call``, counted in ``result``; the versions to publish."""
        result.calls = len(by_call)
        reads, published, result.new_events = self._add_and_read(by_call)
        to_publish: dict[str, tuple[int, CallState]] = {}
        pending = set(by_call)
        for _ in range(MAX_CAS_ROUNDS):
            states = {sid: reduce(sid, reads[sid].events) for sid in pending}
            for sid in pending:
                # Outbox: a version written but never published (its worker died) goes out now.
                read = reads[sid]
                if read.state is not None and read.version > published.get(sid, 0):
                    to_publish[sid] = (read.version, CallState.from_json(read.state))
            encoded = {sid: state.to_json() for sid, state in states.items()}
            writes = {sid: raw for sid, raw in encoded.items() if raw != reads[sid].state}
            won = self._commit_states(writes, reads, states)
            for sid, version in won.items():
                to_publish[sid] = (version, states[sid])
                result.changed.append(sid)
                change = state_change_field(states[sid].status or NO_STATUS)
                result.counts[change] = result.counts.get(change, 0) + 1
            pending = set(writes) - set(won)
            if not pending:
                break
            result.conflicts += len(pending)
            # Read the losers again (no events to add this time).
            reads |= self._add_and_read({sid: [] for sid in pending})[0]
        else:
            raise StoreConflict(len(pending))
        _count_stored(result.counts, [e for events in by_call.values() for e in events], result.new_events)
        return to_publish

    # -- steps -----------------------------------------------------------------------------

    def _add_and_read(self, by_call: dict[str, list[Event]]) -> tuple[dict[str, _Read], dict[str, int], int]:
        pipe = self.redis.pipeline(transaction=False)
        sids = list(by_call)
        for sid in sids:
            if by_call[sid]:
                fields = [part for e in by_call[sid] for part in (e.store_key(), e.canonical())]
                pipe.hset(keys.events(sid), items=fields)
            pipe.hgetall(keys.events(sid))
            pipe.hmget(keys.call(sid), "state", "version")
        pipe.hmget(keys.PUBLISHED, sids)
        # Last in the pipeline, so that the replies read below keep their places.
        deliveries.record(pipe, by_call, self.retention)
        replies = iter(pipe.execute())
        new_events = 0
        reads: dict[str, _Read] = {}
        for sid in sids:
            if by_call[sid]:
                new_events += next(replies)
            reads[sid] = self._parse_read(next(replies), next(replies))
        published = {
            sid: int(raw.split(b":", 1)[0])
            for sid, raw in zip(sids, next(replies), strict=True)
            if raw is not None
        }
        return reads, published, new_events

    @staticmethod
    def _parse_read(raw_events: dict[bytes, bytes], call: list[bytes | None]) -> _Read:
        state, version = call
        return _Read(
            events=[Event.from_canonical(raw) for raw in raw_events.values()],
            state=state,
            version=int(version) if version is not None else 0,
        )

    def _commit_states(
        self, writes: dict[str, bytes], reads: dict[str, _Read], states: dict[str, CallState]
    ) -> dict[str, int]:
        """Compare-and-set each state over the version it was computed from; the winners."""
        if not writes:
            return {}
        order = list(writes)
        commands = []
        for sid in order:
            read = reads[sid]
            # TTLs are set when a call appears and again when it becomes final: enough to expire
            # every call `retention` after its last meaningful change, at no cost per event.
            was_final = read.state is not None and orjson.loads(read.state)["final"]
            ttl = self.retention if read.state is None or states[sid].final != was_final else 0
            commands.append((keys.call(sid), keys.events(sid), read.version, writes[sid], ttl))
        won: dict[str, int] = {}
        for sid, version in zip(order, self._evalsha_all(self._commit, commands), strict=True):
            if version >= 0:
                won[sid] = int(version)
        return won

    def _evalsha_all(self, script: Script, commands: list[tuple[str, str, int, bytes, int]]) -> list[Any]:
        """Run ``script`` once per command (two keys, three arguments) in one round trip.

        EVALSHA directly: redis-py's pipelined scripts ask SCRIPT EXISTS first, a round trip per
        batch. If Redis lost its script cache (a restart), load the script and run them again:
        nothing ran, since every EVALSHA of the batch failed the same way.
        """

        def pipeline() -> Pipeline:
            pipe = self.redis.pipeline(transaction=False)
            for call_key, events_key, version, state, ttl in commands:
                pipe.evalsha(script.sha, 2, call_key, events_key, version, state, ttl)
            return pipe

        try:
            return pipeline().execute()
        except NoScriptError:
            self.redis.script_load(script.script)
            return pipeline().execute()

    def _publish_versions(self, entries: dict[str, tuple[int, CallState]], counts: dict[str, int]) -> int:
        """Step 4, with ``counts`` added to the counters in the same round trip; the number of
        stream entries added."""
        if not entries:
            if counts:
                with self.redis.pipeline(transaction=False) as pipe:
                    hincrby_all(pipe, counts)
                    pipe.execute()
            return 0
        now = time.time()
        args: list[str | int | float] = [int((now - self.retention) * 1000)]
        for sid, (version, state) in entries.items():
            score = state.updated_at.timestamp() if state.updated_at is not None else now
            args += [sid, version, state.status or NO_STATUS, int(state.final), score]
        script_keys = [keys.PUBLISHED, keys.RECENT, keys.ACTIVE, keys.CHANGES]
        script_keys += [keys.by_status(status) for status in PUBLISHED_STATUSES]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._publish.sha, len(script_keys), *script_keys, *args)
            hincrby_all(pipe, counts)
            added, *rest = pipe.execute(raise_on_error=False)
        for reply in rest:
            if isinstance(reply, Exception):
                raise reply
        if isinstance(added, NoScriptError):
            # Redis lost its script cache (a restart): the counts went in, the script did not run.
            added = self._publish(keys=script_keys, args=args)
        elif isinstance(added, Exception):
            raise added
        return int(added)

    def _store_orphans(self, events: Sequence[Event]) -> int:
        """Recording callbacks naming no call (conference recordings) are kept, per recording.
        Returns how many of them were new."""
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            key = keys.orphan_recording(event.recording_sid or "unknown")
            pipe.hset(key, event.store_key(), event.canonical())
            pipe.expire(key, self.retention)
        return sum(pipe.execute()[::2])


def _count_stored(counts: dict[str, int], events: Sequence[Event], new: int) -> None:
    """Count ``events``, of which ``new`` were not stored before, and their lags until now."""
    if not events:
        return
    for name, amount in (("new", new), ("duplicate", len(events) - new)):
        if amount:
            counts[event_field(name)] = counts.get(event_field(name), 0) + amount
    now = time.time()
    add_lags(counts, [now - e.received_at for e in events if e.received_at is not None])
