"""What the store holds for one call record, decoded for assertions (docs/redis-schema.md).

The call hash keeps its ``state`` and its event set compressed, so tests compare the decoded
content: the state's JSON, and the event set's stored events by slot (without the delivery
counts, which grow with every redelivery by design).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson

from callstate import compression, eventset, keys
from callstate.connection import StoreClient


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
