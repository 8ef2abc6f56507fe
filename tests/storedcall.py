"""What the store holds for one call record, decoded for assertions (docs/redis-schema.md).

The call hash keeps its ``state`` and its event set compressed, so tests compare the decoded
content: the state's JSON, and the event set's stored events by slot (without the delivery
counts, which grow with every redelivery by design).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson
import zstandard

from callstate import compression, eventset, keys
from callstate.connection import StoreClient
from callstate.event import Event
from workers import codec
from workers.reduce import reduce


def state_json(client: StoreClient, record: str) -> bytes | None:
    """The record's state JSON, ``None`` if it has none."""
    raw = cast(bytes | None, client.hget(keys.call(record), "state"))
    return None if raw is None else compression.state_json(raw)


def states_json(client: StoreClient, records: Sequence[str]) -> list[bytes | None]:
    """:func:`state_json` of several records, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for record in records:
        pipe.hget(keys.call(record), "state")
    return [None if raw is None else compression.state_json(raw) for raw in pipe.execute()]


def state(client: StoreClient, record: str) -> dict[str, Any]:
    """The record's state, decoded; fails if it has none."""
    raw = state_json(client, record)
    assert raw is not None, f"{record} has no state"
    decoded: dict[str, Any] = orjson.loads(raw)
    return decoded


def entries(client: StoreClient, record: str) -> dict[str, eventset.Entry]:
    """The record's event set, with the deliveries."""
    return eventset.load(cast(bytes | None, client.hget(keys.call(record), "events")))


def events(client: StoreClient, record: str) -> dict[str, bytes]:
    """The record's stored events by slot (preference bytes, then the packed event)."""
    return {slot: entry.value for slot, entry in entries(client, record).items()}


def content(client: StoreClient, record: str) -> dict[str, Any]:
    """State JSON, version and events of a record: what must not depend on delivery order."""
    version = cast(bytes | None, client.hget(keys.call(record), "version"))
    return {"state": state_json(client, record), "version": version, "events": events(client, record)}


def write_schema_2(client: StoreClient, sid: str, history: list[Event], ttl: int) -> None:
    """``sid`` stored as schema 2 stored it (its events and their deliveries in keys of their
    own, the state as JSON), the first event delivered twice."""
    events = {codec.field(e): codec.encode(e) for e in history}
    deliveries = {codec.field(e): "1" for e in history}
    deliveries[codec.field(history[0])] = "2"
    deliveries.update(
        {codec.field(e) + "|first": repr(e.received_at) for e in history if e.received_at is not None}
    )
    client.hset(f"callstate:events:{{{sid}}}", mapping=events)  # type: ignore[arg-type]
    client.hset(f"callstate:deliveries:{{{sid}}}", mapping=deliveries)  # type: ignore[arg-type]
    client.hset(keys.call(sid), mapping={"state": reduce(sid, history).to_json(), "version": 3})
    for key in (keys.call(sid), f"callstate:events:{{{sid}}}", f"callstate:deliveries:{{{sid}}}"):
        client.expire(key, ttl)


def newer_state() -> bytes:
    """A stored value this version cannot read: a zstd frame made with a dictionary it does not
    ship (what a newer callstate might write)."""
    foreign = zstandard.ZstdCompressionDict(b"x" * 2000, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(dict_data=foreign).compress(b'{"sid":"CA"}')
