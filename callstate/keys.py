"""The Redis key layout: the public contract that dashboards read (docs/redis-schema.md).

Changing a name here changes the schema: bump :data:`SCHEMA_VERSION` and the document together.

Per-call keys carry the call's *record* as a hash tag (``{CA...}``, or ``{CA...:AC...}`` for a
call a subaccount's token vouched for: :meth:`callstate.event.Event.record`) so that one record's
keys live in one Redis Cluster slot and the atomic part of an update touches that slot only.
Global keys share the hash tag ``{callstate}``, so the script that updates indexes and the change
stream is atomic too.
"""

from __future__ import annotations

from typing import Final

#: Version of the layout documented in docs/redis-schema.md, stored at :data:`SCHEMA`.
SCHEMA_VERSION: Final = 2

PREFIX: Final = "callstate"

#: String: the schema version, written by every worker at start-up.
SCHEMA: Final = f"{PREFIX}:{{callstate}}:schema"
#: Sorted set: every known call record, scored by its ``updated_at`` (Unix seconds), bounded to
#: a window around processing time (workers.store.index_score).
RECENT: Final = f"{PREFIX}:{{callstate}}:recent"
#: Sorted set: calls that are not final yet, scored like RECENT.
ACTIVE: Final = f"{PREFIX}:{{callstate}}:active"
#: Sorted set: calls that are final, scored like RECENT.
FINAL: Final = f"{PREFIX}:{{callstate}}:final"
#: Hash: CallSid -> ``<version>:<status>``, the last state published to indexes and stream.
PUBLISHED: Final = f"{PREFIX}:{{callstate}}:published"
#: Stream: one entry per change of a call's reconciled state.
CHANGES: Final = f"{PREFIX}:{{callstate}}:changes"
#: Sorted set: CallSid -> Unix seconds of the sweep's last REST request about it.
SWEPT: Final = f"{PREFIX}:{{callstate}}:swept"
#: String with a PX expiry: the sweep's lease (workers.sweep).
SWEEP_LOCK: Final = f"{PREFIX}:{{callstate}}:sweep:lock"
#: Hash: the deployment's counters, one field per labelled value (callstate.counters).
METRICS: Final = f"{PREFIX}:{{callstate}}:metrics"


def call(record: str) -> str:
    """Hash: ``state`` (JSON), ``version`` (int) of one call record (a CallSid, or
    ``<CallSid>:<tenant AccountSid>``)."""
    return f"{PREFIX}:call:{{{record}}}"


def events(record: str) -> str:
    """Hash: slot -> encoded event (workers.codec); the record's distinct events."""
    return f"{PREFIX}:events:{{{record}}}"


def record(call_sid: str, tenant: str | None = None) -> str:
    """The record of ``call_sid`` as verified by ``tenant``'s token (``None``: the main token)."""
    return call_sid if tenant is None else f"{call_sid}:{tenant}"


def deliveries(record: str) -> str:
    """Hash: event-set field -> deliveries counted; ``<field>|first`` -> first received (Unix s)."""
    return f"{PREFIX}:deliveries:{{{record}}}"


def orphan_recording(recording_sid: str) -> str:
    """Hash like :func:`events`, for a recording callback that names no call (conferences)."""
    return f"{PREFIX}:recording:{{{recording_sid}}}"


def by_status(status: str) -> str:
    """Sorted set: calls whose current status is ``status`` (``none`` for status null)."""
    return f"{PREFIX}:{{callstate}}:status:{status}"
