"""The Redis key layout: the public contract that dashboards read (docs/redis-schema.md).

Changing a name here changes the schema: bump :data:`SCHEMA_VERSION` and the document together.

Per-call keys carry the call's *record* as a hash tag (``{CA...}``, or ``{CA...:AC...}`` for a
call a subaccount's token vouched for: :meth:`callstate.event.Event.record`) so that one record's
keys live in one Redis Cluster slot and the atomic part of an update touches that slot only.
The indexes and the change stream are split into buckets (callstate.buckets): the keys of bucket
``b`` share the hash tag ``{callstate:b}``, so the script that publishes to one bucket is atomic and
no slot takes every event. The few other global keys share ``{callstate}``.
"""

from __future__ import annotations

from typing import Final

#: Version of the layout documented in docs/redis-schema.md, stored at :data:`SCHEMA`.
SCHEMA_VERSION: Final = 3

PREFIX: Final = "callstate"

#: String: the schema version, written by every worker at start-up.
SCHEMA: Final = f"{PREFIX}:{{callstate}}:schema"
#: Hash: counter name -> integer, for metrics (e.g. ``events_over_cap``).
STATS: Final = f"{PREFIX}:{{callstate}}:stats"
#: String: how many buckets the indexes and the change stream are split into (callstate.buckets).
BUCKETS: Final = f"{PREFIX}:{{callstate}}:buckets"
#: Sorted set: CallSid -> Unix seconds of the sweep's last REST request about it.
SWEPT: Final = f"{PREFIX}:{{callstate}}:swept"
#: String with a PX expiry: the sweep's lease (workers.sweep).
SWEEP_LOCK: Final = f"{PREFIX}:{{callstate}}:sweep:lock"
#: Hash: the deployment's counters, one field per labelled value (callstate.counters).
METRICS: Final = f"{PREFIX}:{{callstate}}:metrics"


def call(record: str) -> str:
    """Hash of one call record (a CallSid, or ``<CallSid>:<tenant AccountSid>``): ``state`` (the
    JSON, compressed: callstate.compression), ``version`` (int) and ``events`` (its event set with
    the deliveries: callstate.eventset)."""
    return f"{PREFIX}:call:{{{record}}}"


def record(call_sid: str, tenant: str | None = None) -> str:
    """The record of ``call_sid`` as verified by ``tenant``'s token (``None``: the main token)."""
    return call_sid if tenant is None else f"{call_sid}:{tenant}"


def of_record(record: str) -> tuple[str, ...]:
    """Every key one call record owns (its call hash: schema 3 keeps everything there)."""
    return (call(record),)


def dictionary(dictionary_id: int) -> str:
    """String: the zstd dictionary ``dictionary_id`` that stored values name (callstate.compression)."""
    return f"{PREFIX}:{{callstate}}:dictionary:{dictionary_id}"


def orphan_recording(recording_sid: str) -> str:
    """Hash: slot -> stored event (workers.codec), for recording callbacks that name no call
    (conferences)."""
    return f"{PREFIX}:recording:{{{recording_sid}}}"


def _bucket(bucket: int, name: str) -> str:
    return f"{PREFIX}:{{{PREFIX}:{bucket}}}:{name}"


def recent(bucket: int) -> str:
    """Sorted set: every known call record of ``bucket``, scored by its ``updated_at`` (Unix
    seconds), bounded to a window around processing time (workers.store.index_score)."""
    return _bucket(bucket, "recent")


def active(bucket: int) -> str:
    """Sorted set: the records of ``bucket`` that are not final yet, scored like :func:`recent`."""
    return _bucket(bucket, "active")


def final(bucket: int) -> str:
    """Sorted set: the records of ``bucket`` that are final, scored like :func:`recent`."""
    return _bucket(bucket, "final")


def published(bucket: int) -> str:
    """Hash: record -> ``<version>:<status>:<mask>``, the last state of each record of ``bucket``
    published to the indexes and the stream (the outbox), and which of the 30 versions below it
    have their stream entry too (workers/publish.lua)."""
    return _bucket(bucket, "published")


def changes(bucket: int) -> str:
    """Stream: one entry per change of the state of a record of ``bucket``."""
    return _bucket(bucket, "changes")


def by_status(status: str, bucket: int) -> str:
    """Sorted set: the records of ``bucket`` whose status is ``status`` (``none`` for null)."""
    return _bucket(bucket, f"status:{status}")
