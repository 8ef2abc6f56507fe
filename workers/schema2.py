"""What schema 2 stored for a call record outside its call hash, for the move to schema 3.

Schema 2 kept a record's events in ``callstate:events:{<record>}`` (slot -> stored event) and their
delivery counts in ``callstate:deliveries:{<record>}`` (slot -> count, ``<slot>|first`` -> Unix
seconds); schema 3 keeps both in the call hash's ``events`` (callstate.eventset). The stored
events are the same bytes in both. Used by ``callstate migrate`` (:mod:`workers.migration`) and by
the store, which reads these keys for a record it finds still written by schema 2.
"""

from __future__ import annotations

from typing import Final

from callstate import eventset, keys

_FIRST: Final = b"|first"


def old_events(record: str) -> str:
    """Schema 2's event set of ``record``."""
    return f"{keys.PREFIX}:events:{{{record}}}"


def old_deliveries(record: str) -> str:
    """Schema 2's delivery counts of ``record``."""
    return f"{keys.PREFIX}:deliveries:{{{record}}}"


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
