"""Deliveries: how many times each distinct event of a call reached callstate, and when first.

The event set keeps each distinct event once (a redelivery is a duplicate and changes nothing), so
the set alone cannot say that Twilio sent a callback three times, or when. ``callstate inspect``
wants both, so the worker counts deliveries beside the event set, in the same pipeline that adds
the events (:meth:`workers.store.Store.apply`): two commands per event, no extra round trip, and
nothing that the state depends on (docs/redis-schema.md, ``callstate:deliveries:{<CallSid>}``).

The count is of deliveries *applied*: a job that RQ runs twice (its worker died after the pipeline)
counts its events twice. The first-received time is the web process's clock when it answered 204.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis.client import Pipeline

from callstate import keys
from callstate.event import Event

#: Suffix of the field holding an event's first-received time, next to its count.
_FIRST = "|first"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The deliveries of one distinct event: how many, and the first one's Unix time (``None``
    for events that came from no request, e.g. the sweep's REST answers)."""

    count: int
    first_received: float | None


def record(pipe: Pipeline, by_call: Mapping[str, Sequence[Event]], ttl: int) -> None:
    """Queue on ``pipe`` the commands that count ``by_call``'s events (keyed as in the event set)
    and keep the hash ``ttl`` seconds after the latest delivery (as long as the calls' events)."""
    for sid, events in by_call.items():
        if not events:
            continue
        key = keys.deliveries(sid)
        for event in events:
            field = event.store_key()
            pipe.hincrby(key, field, 1)
            if event.received_at is not None:
                pipe.hsetnx(key, field + _FIRST, repr(event.received_at))
        pipe.expire(key, ttl)


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
