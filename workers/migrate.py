"""Migration of a schema 2 store to schema 3 (``callstate migrate``).

Schema 2 kept a record's events in ``callstate:events:{<record>}`` (slot -> stored event), their
delivery counts in ``callstate:deliveries:{<record>}`` (slot -> count, ``<slot>|first`` -> Unix
seconds) and the state as JSON; schema 3 keeps all of it in the call hash, compressed
(docs/redis-schema.md). The stored events themselves are the same bytes in both, so the
migration moves them without decoding them, and the state is the same JSON, compressed.

Run it with the workers stopped (callbacks keep queueing meanwhile): a schema 2 worker would go
on writing the old keys. Each record is migrated on its own (its keys share one slot) and the old
keys are deleted last, so an interrupted run is resumed by running it again; the schema version
becomes 3 when none is left. The indexes, the stream and the recording hashes are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Final, cast

from callstate import compression, eventset, keys
from workers.replay import scan_records
from workers.store import Store

#: Records migrated per round trip.
CHUNK: Final = 200

_FIRST: Final = b"|first"
#: Every zstd frame starts with these four bytes (RFC 8878); a schema 2 state is JSON.
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


def old_events(record: str) -> str:
    """Schema 2's event set of ``record``."""
    return f"{keys.PREFIX}:events:{{{record}}}"


def old_deliveries(record: str) -> str:
    """Schema 2's delivery counts of ``record``."""
    return f"{keys.PREFIX}:deliveries:{{{record}}}"


@dataclass(slots=True)
class Migrated:
    """What a migration did: records moved to schema 3."""

    records: int = 0


def schema2_records(store: Store) -> Iterator[str]:
    """Every record that still has a schema 2 event set."""
    return scan_records(store, old_events)


def entries_of(events: dict[bytes, bytes], deliveries: dict[bytes, bytes]) -> dict[str, eventset.Entry]:
    """Schema 3's event set from schema 2's hashes (an event stored before counts were kept has
    a count of 1 and no first time)."""
    out: dict[str, eventset.Entry] = {}
    for slot, value in events.items():
        count = deliveries.get(slot)
        first = deliveries.get(slot + _FIRST)
        out[slot.decode()] = eventset.Entry(
            value, int(count) if count else 1, None if first is None else round(float(first) * 1000)
        )
    return out


def migrate(store: Store, progress: Callable[[Migrated], None] | None = None) -> Migrated:
    """Move every schema 2 record to schema 3, then set the schema version to 3."""
    done = Migrated()
    records = schema2_records(store)
    redis = store.redis
    while chunk := list(islice(records, CHUNK)):
        pipe = redis.pipeline(transaction=False)
        for record in chunk:
            pipe.hgetall(old_events(record))
            pipe.hgetall(old_deliveries(record))
            pipe.hget(keys.call(record), "state")
            pipe.ttl(old_events(record))
        replies = iter(pipe.execute())
        pipe = redis.pipeline(transaction=False)
        for record in chunk:
            events = cast(dict[bytes, bytes], next(replies))
            deliveries = cast(dict[bytes, bytes], next(replies))
            state = cast(bytes | None, next(replies))
            ttl = cast(int, next(replies))
            fields: dict[str, bytes] = {"events": eventset.dump(entries_of(events, deliveries))}
            if state is not None and not state.startswith(_ZSTD_MAGIC):  # not migrated yet
                fields["state"] = compression.store_state(state)
            pipe.hset(keys.call(record), mapping=fields)  # type: ignore[arg-type]
            if state is None:  # a worker died between its two writes: the hash is new, give it a TTL
                pipe.expire(keys.call(record), ttl if ttl > 0 else store.retention)
            pipe.delete(old_events(record), old_deliveries(record))
        pipe.execute()
        done.records += len(chunk)
        if progress is not None:
            progress(done)
    store.write_schema_version()
    return done
