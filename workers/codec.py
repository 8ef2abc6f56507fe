"""How an event is stored in a record's event set: the one place that knows the encoding.

A stored value is the event's :meth:`~callstate.event.Event.preference` (:data:`PREFERENCE_WIDTH`
ASCII characters) followed by its canonical JSON; the field is its
:meth:`~callstate.event.Event.slot`. The add script (``add.lua``) compares the first
:data:`PREFERENCE_WIDTH` bytes of two values sharing a slot and keeps the greater, so that prefix
must sort like :meth:`Event.preference`; what follows it is this module's business alone
(docs/redis-schema.md, "Re-splits").
"""

from __future__ import annotations

from typing import Final

from callstate.event import Event

#: Bytes of preference at the start of every stored value (Event.preference()'s length).
PREFERENCE_WIDTH: Final = 22


def field(event: Event) -> str:
    """The event set's field for ``event``: its slot."""
    return event.slot()


def encode(event: Event) -> bytes:
    """The stored value of ``event``: preference, then canonical JSON."""
    return event.preference().encode("ascii") + event.canonical()


def decode(raw: bytes) -> Event:
    """Inverse of :func:`encode`."""
    return Event.from_canonical(raw[PREFERENCE_WIDTH:])
