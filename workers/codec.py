"""How an event is stored in a record's event set: the one place that knows the encoding.

A stored value is the event's :meth:`~callstate.event.Event.preference` as bytes
(:data:`PREFERENCE_WIDTH` bytes: its 22 hex digits, two to a byte, which keeps their order) followed
by the event's packed form (:mod:`callstate.packing`, about a fifth of its JSON); the field is its
:meth:`~callstate.event.Event.slot`. Adding events (:func:`callstate.eventset.add`, and
``add.lua`` for recordings that name no call) compares the first :data:`PREFERENCE_WIDTH` bytes of
two values sharing a slot and keeps the greater, so that prefix must sort like
:meth:`Event.preference`; what follows it is this module's business alone
(docs/redis-schema.md, "Re-splits"; the packed form: docs/redis-schema.md, "The packed event").
"""

from __future__ import annotations

from typing import Final

from callstate.event import Event
from callstate.packing import pack, unpack

#: Bytes of preference at the start of every stored value (half of Event.preference()'s length).
PREFERENCE_WIDTH: Final = 11
#: Decoded events remembered (about 1 KB each): the live calls' events of a busy worker.
DECODED_CACHE: Final = 20_000

_DECODED: dict[bytes, Event] = {}


def field(event: Event) -> str:
    """The event set's field for ``event``: its slot."""
    return event.slot()


def encode(event: Event) -> bytes:
    """The stored value of ``event``: preference, then the packed event."""
    return bytes.fromhex(event.preference()) + pack(event)


def decode(raw: bytes) -> Event:
    """Inverse of :func:`encode`.

    Every job reads back all the events of the calls it touches, so the same stored values are
    decoded again and again while a call is live: the latest ones are remembered (a value always
    decodes to the same event, which is immutable). Emptied when full.
    """
    event = _DECODED.get(raw)
    if event is None:
        event = unpack(raw[PREFERENCE_WIDTH:])
        if len(_DECODED) >= DECODED_CACHE:
            _DECODED.clear()
        _DECODED[raw] = event
    return event
