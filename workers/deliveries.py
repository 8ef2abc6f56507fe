"""Deliveries: how many times each distinct event of a call reached callstate, and when first.

The event set keeps each distinct event once (a redelivery is a duplicate and changes nothing), so
the set alone cannot say that Twilio sent a callback three times, or when. ``callstate inspect``
wants both, so the script that adds events to the event set (``add.lua``, run by
:meth:`workers.store.Store.apply`) counts the deliveries of the events it keeps beside it, by
event-set field (slot): no extra command or round trip, nothing that the state depends on, and no
more fields than the event set has (docs/redis-schema.md, ``callstate:deliveries:{<record>}``).
A re-split of a stored callback counts as a delivery of it: it has its slot.

The count is of deliveries *applied*: a job that RQ runs twice (its worker died after the pipeline)
counts its events twice. The first-received time is the web process's clock when it answered 204.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis import Redis

from callstate import keys

#: Suffix of the field holding an event's first-received time, next to its count.
_FIRST = "|first"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The deliveries of one distinct event: how many, and the first one's Unix time (``None``
    for events that came from no request, e.g. the sweep's REST answers)."""

    count: int
    first_received: float | None


def read(redis: Redis, call_sid: str) -> dict[str, Delivery]:
    """The deliveries of ``call_sid``'s events, by event-set field."""
    raw = cast(dict[bytes, bytes], redis.hgetall(keys.deliveries(call_sid)))
    fields = {name.decode(): value.decode() for name, value in raw.items()}
    return {
        name: Delivery(int(value), _float(fields.get(name + _FIRST)))
        for name, value in fields.items()
        if not name.endswith(_FIRST)
    }


def _float(raw: str | None) -> float | None:
    return None if raw is None else float(raw)
