"""The store as a dashboard reads it (docs/redis-schema.md), in a few typed calls.

This is the live page's only way into Redis (``receiver.dashboard``), ``callstate watch``'s too,
and a working example for anyone who writes a dashboard: every key it touches is named by
:mod:`callstate.keys`, and it never writes.

- :class:`Reader`: one call (:meth:`Reader.call`), a page of recent, active, stuck calls or calls
  of one status, newest first (:meth:`Reader.page`), the counts by status (:meth:`Reader.counts`),
  and the raw entries of the change stream after a position (:meth:`Reader.changes`).
- :class:`Follower`: follows the change stream from a saved position and applies the per-call
  version rule of docs/redis-schema.md, "The change stream" (keep the highest
  version seen per call, drop anything at or below it). A lost connection (Redis restarting) costs
  a pause, never an exception, and reading resumes from the same position: with AOF the stream
  survives the restart, and entry IDs only grow, so nothing is skipped or repeated.

The indexes and the stream are split into buckets (docs/redis-schema.md, "Buckets"): pages and
counts merge them, and a position holds one stream ID per bucket (``"<id0>,<id1>,…"``; a single
ID when the store has one bucket, as on a plain Redis).

All of it is blocking redis-py; async callers run it on a thread.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final, Literal, cast

import orjson
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from callstate import compression, eventset, keys
from callstate.buckets import merged_page, read_count
from callstate.buckets import total as bucket_total
from callstate.connection import StoreClient, StoreHandle
from callstate.event import parse_sequence_number
from callstate.packing import unpack
from callstate.status import NO_STATUS, PUBLISHED_STATUSES

#: The lists :meth:`Reader.page` serves besides one status's index.
View = Literal["recent", "active", "stuck"]
VIEWS: Final[tuple[View, ...]] = ("recent", "active", "stuck")

#: The position before every entry of a stream.
START: Final = "0-0"

#: Bytes of preference before the packed event in the events hash (docs/redis-schema.md,
#: "The packed event"; workers.codec writes it).
PREFERENCE: Final = 11


@dataclass(frozen=True, slots=True)
class StoredCall:
    """One call as stored: its state (the JSON object of docs/redis-schema.md) and version."""

    sid: str
    version: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    """A page of an index, newest first. ``total`` counts the index's entries; ``calls`` may be
    shorter than asked when some calls expired since they were indexed (the sweep prunes those)."""

    calls: list[StoredCall]
    total: int
    offset: int


@dataclass(frozen=True, slots=True)
class Counts:
    """How many calls each index holds, read in one round trip.

    ``by_status`` has every published status, ``none`` included, zero when empty.
    """

    by_status: dict[str, int]
    active: int
    stuck: int
    recent: int


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change stream. ``id`` is the position after it (its stream ID when the
    store has one bucket); ``bucket`` and ``entry`` say which bucket's stream holds it, under which
    stream ID."""

    id: str
    call_sid: str
    version: int
    status: str | None
    final: bool
    bucket: int = 0
    entry: str = ""


def positions(position: str, buckets: int) -> list[str]:
    """A position as one stream ID per bucket: ``"<id>"`` (the same ID in every bucket) or
    ``"<id0>,<id1>,…"`` with one ID per bucket, as :meth:`Reader.changes` writes it. Raises
    ValueError for anything else (positions come from clients: Last-Event-ID, --since)."""
    ids = position.split(",")
    for one in ids:
        position_key(one)
    if len(ids) == 1:
        return ids * buckets
    if len(ids) != buckets:
        raise ValueError(f"a position of {len(ids)} stream IDs for {buckets} buckets")
    return ids


def check_position(position: str) -> None:
    """Raise ValueError unless ``position`` is a stream ID, or several separated by commas."""
    if len(position) > 48 * 1024:
        raise ValueError("position too long")
    for one in position.split(","):
        position_key(one)


def is_after(change: Change, position: str) -> bool:
    """Whether ``change`` comes after ``position`` in its bucket's stream (not yet read there)."""
    ids = position.split(",")
    before = ids[change.bucket] if len(ids) > 1 else ids[0]
    return position_key(change.entry or change.id) > position_key(before)


def advance(position: str, change: Change, buckets: int) -> str:
    """``position`` moved past ``change`` in its bucket (never backwards)."""
    ids = positions(position, buckets)
    entry = change.entry or change.id
    if position_key(entry) > position_key(ids[change.bucket]):
        ids[change.bucket] = entry
    return ",".join(ids) if buckets > 1 else ids[0]


def position_key(position: str) -> tuple[int, int]:
    """A stream ID as a sortable pair (``"1700000000000-3"`` -> ``(1700000000000, 3)``).

    Raises ValueError for anything else: positions come from clients (Last-Event-ID).
    """
    millis, sep, seq = position.partition("-")
    if not (millis.isascii() and millis.isdigit() and len(millis) <= 20):
        raise ValueError(f"not a stream ID: {position!r}")
    if sep and not (seq.isascii() and seq.isdigit() and len(seq) <= 20):
        raise ValueError(f"not a stream ID: {position!r}")
    return int(millis), int(seq) if sep else 0


class Reader:
    """Read-only access to the store through ``redis`` (a redis-py client of the store, plain or
    Cluster, with bytes replies).

    ``stuck_after`` (seconds) is the age of the latest event after which an active call counts as
    stuck, as the sweep counts it (``CALLSTATE_STUCK_AFTER``); ``clock`` gives Unix seconds.
    """

    def __init__(
        self,
        redis: StoreClient | StoreHandle,
        *,
        stuck_after: float = 1800,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = redis
        self.stuck_after = stuck_after
        self.clock = clock
        self._buckets: int | None = None

    @property
    def redis(self) -> StoreClient:
        """The store's client (a :class:`StoreHandle` connects on first use: a web process starts
        while STORE_REDIS_URL is down, and its pages work once it answers)."""
        source = self._source
        return source.client() if isinstance(source, StoreHandle) else source

    def buckets(self) -> int:
        """How many buckets the store's indexes and stream are split into (callstate.buckets):
        read once the workers have written it, 1 until then."""
        if self._buckets is None:
            count = read_count(self.redis, keys.BUCKETS)
            if self.redis.exists(keys.BUCKETS):
                self._buckets = count
            return count
        return self._buckets

    def schema_version(self) -> int | None:
        """The layout version the workers wrote (docs/redis-schema.md: check it first), None before any
        worker ran."""
        raw = cast(bytes | None, self.redis.get(keys.SCHEMA))
        return int(raw) if raw is not None else None

    def call(self, sid: str) -> StoredCall | None:
        """One call, or None if the store does not know it (or it expired)."""
        return self.calls([sid])[0]

    def calls(self, sids: Sequence[str]) -> list[StoredCall | None]:
        """Several calls in one round trip, in the order asked."""
        pipe = self.redis.pipeline(transaction=False)
        for sid in sids:
            pipe.hmget(keys.call(sid), "state", "version")
        out: list[StoredCall | None] = []
        for sid, (state, version) in zip(sids, pipe.execute(), strict=True):
            if state is None or version is None:
                out.append(None)
            else:
                out.append(StoredCall(sid, int(version), orjson.loads(compression.state_json(state))))
        return out

    def deliveries(self, sid: str) -> dict[tuple[int | None, str | None], int]:
        """How often Twilio delivered each call event of ``sid``, by (SequenceNumber, CallStatus),
        the identity of an entry of the state's ``events``: the counts of the event set
        (docs/redis-schema.md, "The event set"), added up over its slots of one identity. Empty
        when the store has no events of the call."""
        stored = cast(bytes | None, self.redis.hget(keys.call(sid), "events"))
        out: dict[tuple[int | None, str | None], int] = {}
        for entry in eventset.load(stored).values():
            # The value: PREFERENCE bytes of the slot's preference, then the packed event.
            event = unpack(entry.value[PREFERENCE:])
            if event.kind != "call":
                continue
            params = dict(event.params)
            identity = (parse_sequence_number(params.get("SequenceNumber")), params.get("CallStatus"))
            out[identity] = out.get(identity, 0) + entry.deliveries
        return out

    def page(self, view: View | str, *, offset: int = 0, limit: int = 50) -> Page:
        """Calls of ``view`` (a :data:`View`, or a status of :data:`PUBLISHED_STATUSES`), newest
        first by their index score (the call's latest Twilio ``Timestamp``).

        ``stuck`` is the active calls whose latest event is older than ``stuck_after``.
        """
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        buckets = self.buckets()
        if view == "stuck":
            cutoff = self.clock() - self.stuck_after
            entries = merged_page(self.redis, keys.active, buckets, offset=offset, limit=limit, newest=cutoff)
            pipe = self.redis.pipeline(transaction=False)
            for bucket in range(buckets):
                pipe.zcount(keys.active(bucket), "-inf", cutoff)
            total = sum(int(n) for n in pipe.execute())
        else:
            index = _index(view)
            entries = merged_page(self.redis, index, buckets, offset=offset, limit=limit)
            total = bucket_total(self.redis, index, buckets)
        sids = [member.decode() for member, _ in entries]
        found = [call for call in self.calls(sids) if call is not None] if sids else []
        return Page(found, total, offset)

    def counts(self) -> Counts:
        """Calls by status, active, stuck and known, in one round trip (one per master)."""
        buckets = self.buckets()
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(buckets):
            for status in PUBLISHED_STATUSES:
                pipe.zcard(keys.by_status(status, bucket))
            pipe.zcard(keys.active(bucket))
            pipe.zcount(keys.active(bucket), "-inf", self.clock() - self.stuck_after)
            pipe.zcard(keys.recent(bucket))
        replies = [int(n) for n in pipe.execute()]
        width = len(PUBLISHED_STATUSES) + 3
        sums = [sum(replies[column::width]) for column in range(width)]
        *by_status, active, stuck, recent = sums
        return Counts(dict(zip(PUBLISHED_STATUSES, by_status, strict=True)), active, stuck, recent)

    def last_position(self) -> str:
        """The position after every entry written so far ("from now on"): per bucket, its
        stream's newest ID (:data:`START` for an empty one)."""
        buckets = self.buckets()
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(buckets):
            pipe.xrevrange(keys.changes(bucket), count=1)
        newest = cast(list[list[tuple[bytes, Any]]], pipe.execute())
        ids = [entries[0][0].decode() if entries else START for entries in newest]
        return ",".join(ids) if buckets > 1 else ids[0]

    def changes(self, after: str, *, count: int = 500, block: float | None = None) -> list[Change]:
        """Up to ``count`` stream entries after position ``after`` (see :func:`positions`), in
        the order of their stream IDs across buckets; each change's ``id`` is the position after it.

        With ``block`` (seconds), wait that long for the first one when there is none yet; the
        client's socket timeout must be longer than ``block``. Repeats are NOT dropped here: that
        is :class:`Follower`'s job.
        """
        buckets = self.buckets()
        ids = positions(after, buckets)
        found = self._read(ids, count)
        if not found and block is not None:
            found = self._wait(ids, count, block)
        found.sort(key=lambda item: position_key(item[1].decode()))
        out: list[Change] = []
        position = after if len(after.split(",")) == buckets else ",".join(ids) if buckets > 1 else ids[0]
        for bucket, entry_id, fields in found[:count]:
            change = _change(bucket, entry_id, fields, position)
            position = advance(position, change, buckets)
            out.append(replace(change, id=position))
        return out

    def _read(self, ids: list[str], count: int) -> list[tuple[int, bytes, dict[bytes, bytes]]]:
        pipe = self.redis.pipeline(transaction=False)
        for bucket, position in enumerate(ids):
            pipe.xrange(keys.changes(bucket), min=f"({position}", count=count)
        pages = cast(list[list[tuple[bytes, dict[bytes, bytes]]]], pipe.execute())
        return [(bucket, entry, fields) for bucket, page in enumerate(pages) for entry, fields in page]

    def _wait(self, ids: list[str], count: int, block: float) -> list[tuple[int, bytes, dict[bytes, bytes]]]:
        """Block until an entry comes: one XREAD over every bucket's stream on one Redis; on a
        cluster (one XREAD may only name one slot) a poll of all of them every 100 ms."""
        if not isinstance(self.redis, RedisCluster):
            streams: dict[Any, Any] = {keys.changes(bucket): position for bucket, position in enumerate(ids)}
            reply = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                self.redis.xread(streams, count=count, block=max(1, int(block * 1000))),
            )
            bucket_of_key = {keys.changes(bucket).encode(): bucket for bucket in range(len(ids))}
            return [
                (bucket_of_key[key], entry, fields) for key, entries in reply for entry, fields in entries
            ]
        deadline = time.monotonic() + block
        while time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            found = self._read(ids, count)
            if found:
                return found
        return []


class Follower:
    """The change stream from ``position`` on, each change once per version, in stream order.

    ``position`` is a stream ID saved from :attr:`position` (resume where you left off), or
    ``"$"`` for changes after the first :meth:`poll`. Keeps the highest version seen for the last
    ``remember`` calls it saw (a bounded map: a repeat of a call forgotten since, which can only
    come from a worker crash, is delivered again, which at-least-once allows).

    ``sleep`` is how it pauses after a lost connection (injected for tests): 0.1 s, doubling up to
    5 s while Redis stays away; :attr:`connected` says whether the last poll reached Redis.
    """

    def __init__(
        self,
        reader: Reader,
        position: str = "$",
        *,
        remember: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if position != "$":
            check_position(position)
        self.reader = reader
        self.position = position
        self.remember = remember
        self.connected = True
        #: Whether the last poll read as many entries as it asked for: more were waiting.
        self.saturated = False
        self._sleep = sleep
        self._failures = 0
        self._seen: OrderedDict[str, int] = OrderedDict()

    def poll(self, *, block: float = 5.0, count: int = 500) -> list[Change]:
        """The new changes after :attr:`position`, waiting up to ``block`` seconds for one.

        Advances :attr:`position` past every entry read, repeats included. Returns ``[]`` after a
        pause when Redis cannot be reached; call it again to go on.
        """
        try:
            if self.position == "$":
                self.position = self.reader.last_position()
            entries = self.reader.changes(self.position, count=count, block=block)
        except (RedisConnectionError, RedisTimeoutError):
            self.connected = False
            self.saturated = False
            self._sleep(min(5.0, 0.1 * 2**self._failures))
            self._failures = min(self._failures + 1, 10)
            return []
        self.connected = True
        self._failures = 0
        self.saturated = len(entries) >= count
        if entries:
            self.position = entries[-1].id
        return [change for change in entries if self.fresh(change)]

    def fresh(self, change: Change) -> bool:
        """Whether ``change`` is newer than every version seen of its call (and remember it)."""
        seen = self._seen.get(change.call_sid, 0)
        if change.version <= seen:
            return False
        self._seen[change.call_sid] = change.version
        self._seen.move_to_end(change.call_sid)
        if len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return True


def _index(view: str) -> Callable[[int], str]:
    if view == "recent":
        return keys.recent
    if view == "active":
        return keys.active
    if view in PUBLISHED_STATUSES:
        return partial(keys.by_status, view)
    raise ValueError(f"no such list: {view!r}")


def _change(bucket: int, entry_id: bytes, fields: dict[bytes, bytes], position: str) -> Change:
    status = fields[b"status"].decode()
    return Change(
        id=position,
        call_sid=fields[b"call"].decode(),
        version=int(fields[b"version"]),
        status=None if status == NO_STATUS else status,
        final=fields[b"final"] == b"1",
        bucket=bucket,
        entry=entry_id.decode(),
    )
