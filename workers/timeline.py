"""A call's timeline, for ``callstate inspect``: each distinct event, with how it was delivered.

:func:`entries` is pure: the stored events (the event set, keyed as stored) and their deliveries
(:mod:`workers.deliveries`) in, one :class:`Entry` per distinct event out, call events in the order
of the state's ``events`` (SequenceNumber, status rank, Twilio time; none last), then recording
events. :func:`read` fetches what it needs in one round trip; :func:`render` writes it for a human.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from redis import Redis

from callstate import compression, eventset, keys
from callstate.event import Event
from callstate.status import CALL_STATUS_RANK, RECORDING_STATUS_RANK, UNKNOWN_RANK
from workers import codec
from workers import deliveries as delivered
from workers.deliveries import Delivery


@dataclass(frozen=True, slots=True)
class Entry:
    """One distinct event. Times are ISO 8601 UTC; ``received_at`` is when its first delivery was
    answered (``None`` for the sweep's REST answers); ``deliveries`` counts them (0 when the event
    predates delivery counting)."""

    kind: str
    sequence_number: int | None
    status: str | None
    timestamp: str | None
    source: str
    received_at: str | None
    deliveries: int
    recording_sid: str | None


def entries(stored: Mapping[str, Event], deliveries: Mapping[str, Delivery]) -> list[Entry]:
    """The timeline of one call from its event set (field -> event) and deliveries (field -> ...)."""

    def order(item: tuple[str, Event]) -> tuple[Any, ...]:
        event = item[1]
        if event.kind == "call":
            seq = event.sequence_number
            rank = CALL_STATUS_RANK.get(event.status or "", UNKNOWN_RANK)
            return (0, seq is None, seq or 0, rank, event.timestamp or _EPOCH, item[0])
        rank = RECORDING_STATUS_RANK.get(event.status or "", UNKNOWN_RANK)
        return (1, event.recording_sid or "", rank, event.timestamp or _EPOCH, item[0])

    timeline = []
    for field, event in sorted(stored.items(), key=order):
        delivery = deliveries.get(field, Delivery(0, None))
        timeline.append(
            Entry(
                kind=event.kind,
                sequence_number=event.sequence_number,
                status=event.status,
                timestamp=_iso(event.timestamp),
                source=event.source,
                received_at=_iso(_from_unix(delivery.first_received)),
                deliveries=delivery.count,
                recording_sid=event.recording_sid,
            )
        )
    return timeline


def read(redis: Redis, call_sid: str) -> tuple[dict[str, Any] | None, list[Entry]]:
    """The stored state of ``call_sid`` (``None`` if none) and its timeline (empty if no events)."""
    state_raw, events_raw = cast(list[bytes | None], redis.hmget(keys.call(call_sid), "state", "events"))
    stored = eventset.load(events_raw)
    events = {slot: codec.decode(entry.value) for slot, entry in stored.items()}
    state = orjson.loads(compression.state_json(state_raw)) if state_raw is not None else None
    return state, entries(events, delivered.of(stored))


def to_json(call_sid: str, state: dict[str, Any] | None, timeline: list[Entry]) -> bytes:
    """``{"sid": ..., "state": <the stored state or null>, "timeline": [<entry>, ...]}``."""
    return orjson.dumps(
        {"sid": call_sid, "state": state, "timeline": [asdict(entry) for entry in timeline]},
        option=orjson.OPT_INDENT_2,
    )


def render(call_sid: str, state: dict[str, Any] | None, timeline: list[Entry]) -> str:
    """The timeline as a table, under a line with the state."""
    lines = [_headline(call_sid, state, timeline)]
    rows = [("seq", "status", "Twilio time", "source", "first received", "deliveries")]
    for entry in timeline:
        seq = "-" if entry.sequence_number is None else str(entry.sequence_number)
        status = entry.status or "-"
        if entry.kind == "recording":
            seq, status = "rec", f"{status} {entry.recording_sid or ''}".rstrip()
        received = entry.received_at or "-"
        rows.append((seq, status, entry.timestamp or "-", entry.source, received, str(entry.deliveries)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
              for row in rows]  # fmt: skip
    return "\n".join(lines)


def _headline(call_sid: str, state: dict[str, Any] | None, timeline: list[Entry]) -> str:
    if state is None:
        return f"call {call_sid}: no state yet ({len(timeline)} event(s) stored, not reconciled)"
    status = state.get("status") or "none"
    final = ", final" if state.get("final") else ""
    facts = [f"call {call_sid}: {status}{final}"]
    if state.get("duration") is not None:
        facts.append(f"duration {state['duration']} s")
    facts.append(f"{len(state.get('events') or [])} call event(s)")
    facts.append(f"{len(state.get('recordings') or [])} recording(s)")
    if state.get("updated_at"):
        facts.append(f"updated {state['updated_at']}")
    return ", ".join(facts)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_unix(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")
