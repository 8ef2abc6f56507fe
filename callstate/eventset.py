"""A call record's event set: its distinct events, one per slot, and their deliveries, as one value.

The store keeps a record's events in one field of its call hash (``events``), compressed
(:mod:`callstate.compression`, the events dictionary): one value per call costs a fraction of a
hash field per event, and what every event of a call repeats (its SIDs, numbers, geography) is
stored about once. The workers read it, add to it with :func:`add` and write it back under a
compare-and-set (``workers/commit.lua``); docs/redis-schema.md, "The event set", is the contract.

Uncompressed, the value is, with varints as in :mod:`callstate.packing`:

* the format, :data:`FORMAT`, then the number of entries;
* per entry, in slot order: the slot (text), the stored event (text: the event's preference,
  then its packed form, ``workers.codec``), the deliveries counted, and the first delivery's
  time as milliseconds since the Unix epoch plus one (``0``: none known, e.g. the sweep's REST
  answers).

Everything here is pure: :func:`add` gives the same set for the same additions in any order and
any grouping, so that any number of workers applying events in any order agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from callstate.compression import EVENTS_DICTIONARY, compress, decompress
from callstate.errors import UnreadableValue
from callstate.packing import read_varint, write_varint

#: The layout of the uncompressed value described above.
FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One slot's event (``value``: preference bytes, then the packed event), how many deliveries
    of it were applied, and the earliest one's time in Unix milliseconds (``None``: unknown)."""

    value: bytes
    deliveries: int
    first_ms: int | None


@dataclass(frozen=True, slots=True)
class Addition:
    """An event to add: its slot, its stored value, and when its delivery was answered (Unix
    seconds; ``None`` for events that came from no request)."""

    slot: str
    value: bytes
    received_at: float | None


@dataclass(slots=True)
class Added:
    """What :func:`add` did: events in new slots, events that took a slot from a less preferred
    split of themselves, and events refused for a new slot over the cap."""

    added: int = 0
    replaced: int = 0
    refused: int = 0


def add(entries: dict[str, Entry], additions: Iterable[Addition], *, cap: int, width: int) -> Added:
    """Add ``additions`` to ``entries`` in place.

    A slot keeps the value whose first ``width`` bytes (the preference) are greater, byte by byte,
    whichever came first; every delivery of a kept slot counts, and the first time is the earliest.
    A new slot beyond ``cap`` slots is refused and counted nowhere, so a flood cannot grow the set.
    """
    done = Added()
    for addition in additions:
        received = None if addition.received_at is None else round(addition.received_at * 1000)
        delivered = Entry(addition.value, 1, received)
        current = entries.get(addition.slot)
        if current is None:
            if len(entries) >= cap:
                done.refused += 1
                continue
            entries[addition.slot] = delivered
            done.added += 1
            continue
        entries[addition.slot] = combined = combine(current, delivered, width=width)
        if combined.value != current.value:
            done.replaced += 1
    return done


def combine(a: Entry, b: Entry, *, width: int) -> Entry:
    """One slot's entry from two sets that counted different deliveries of it: the preferred
    value (as :func:`add` keeps it), the deliveries of both, the earlier first time."""
    value = b.value if b.value != a.value and b.value[:width] > a.value[:width] else a.value
    firsts = [t for t in (a.first_ms, b.first_ms) if t is not None]
    return Entry(value, a.deliveries + b.deliveries, min(firsts) if firsts else None)


def serialize(entries: Mapping[str, Entry]) -> bytes:
    """The uncompressed value of ``entries`` (the same entries always give the same bytes)."""
    out = bytearray()
    write_varint(out, FORMAT)
    write_varint(out, len(entries))
    for slot in sorted(entries):
        entry = entries[slot]
        raw_slot = slot.encode()
        write_varint(out, len(raw_slot))
        out += raw_slot
        write_varint(out, len(entry.value))
        out += entry.value
        write_varint(out, entry.deliveries)
        write_varint(out, 0 if entry.first_ms is None else entry.first_ms + 1)
    return bytes(out)


def parse(data: bytes) -> dict[str, Entry]:
    """Inverse of :func:`serialize`; :class:`UnreadableValue` for anything else."""
    try:
        version, at = read_varint(data, 0)
        if version != FORMAT:
            raise UnreadableValue(f"event set format {version}, this version reads {FORMAT}")
        count, at = read_varint(data, at)
        entries: dict[str, Entry] = {}
        for _ in range(count):
            size, at = read_varint(data, at)
            slot = data[at : at + size].decode()
            at += size
            size, at = read_varint(data, at)
            value = data[at : at + size]
            if len(value) != size:
                raise IndexError("value runs past the end")
            at += size
            deliveries, at = read_varint(data, at)
            first, at = read_varint(data, at)
            entries[slot] = Entry(value, deliveries, first - 1 if first else None)
    except (IndexError, UnicodeDecodeError) as exc:
        raise UnreadableValue(f"not an event set: {exc}") from None
    if at != len(data):
        raise UnreadableValue("not an event set: bytes after the last entry")
    return entries


def load(stored: bytes | None) -> dict[str, Entry]:
    """The entries of a call hash's ``events`` field (``None``: the record has none yet)."""
    return {} if stored is None else parse(decompress(stored))


def dump(entries: Mapping[str, Entry]) -> bytes:
    """What the call hash's ``events`` field holds for ``entries``."""
    return compress(serialize(entries), EVENTS_DICTIONARY)
