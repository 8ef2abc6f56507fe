"""Migration of a schema 2 store to schema 3 (``callstate migrate``).

Schema 2 kept a record's events and delivery counts in keys of their own (:mod:`workers.schema2`)
and its state as JSON; schema 3 keeps all of it in the call hash, compressed
(docs/redis-schema.md). The stored events are the same bytes in both, so the migration moves them
without decoding them, and the state is the same JSON, compressed.

Schema 3 workers also read a record still in schema 2 form, and move it on their next write of
it, so the store keeps working during an upgrade; this command moves every record at once. Each
record is migrated on its own (its keys share one slot) and the old keys are deleted in the same
round trip, so an interrupted run is resumed by running it again. A schema 2 worker still running
may write a record in the old form again: the next schema 3 write of it, or another run, moves it.
The indexes, the stream and the recording hashes are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Final, cast

from callstate import compression, eventset, keys
from workers.replay import scan_records
from workers.schema2 import entries_of, old_deliveries, old_events
from workers.store import Store

#: Records migrated per round trip.
CHUNK: Final = 200


@dataclass(slots=True)
class Migrated:
    """What a migration did: records moved to schema 3."""

    records: int = 0


def schema2_records(store: Store) -> Iterator[str]:
    """Every record that still has a schema 2 event set."""
    return scan_records(store, old_events)


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
            if state is not None and compression.is_legacy_state(state):  # not migrated yet
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
