"""Deliveries: how many times each distinct event of a call reached callstate, and when first.

The event set keeps each distinct event once (a redelivery is a duplicate and changes no state),
so the events alone cannot say that Twilio sent a callback three times, or when. ``callstate
inspect`` wants both, so each entry of the event set (:mod:`callstate.eventset`) counts the
deliveries applied to its slot and keeps the earliest one's time: written with the set, nothing
that the state depends on (docs/redis-schema.md, "The event set"). A re-split of a stored callback
counts as a delivery of it: it has its slot.

The count is of deliveries *applied*: a job that RQ runs twice (its worker died after its write)
counts its events twice. The first-received time is the web process's clock when it answered 204.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from callstate.eventset import Entry


@dataclass(frozen=True, slots=True)
class Delivery:
    """The deliveries of one distinct event: how many, and the first one's Unix time (``None``
    for events that came from no request, e.g. the sweep's REST answers)."""

    count: int
    first_received: float | None


def of(entries: Mapping[str, Entry]) -> dict[str, Delivery]:
    """The deliveries of an event set's entries, by slot."""
    return {
        slot: Delivery(entry.deliveries, None if entry.first_ms is None else entry.first_ms / 1000)
        for slot, entry in entries.items()
    }
