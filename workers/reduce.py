"""Reconciliation: the state of one call as a pure function of the set of its events.

:func:`reduce` takes every stored event of a call (its call-progress and recording callbacks, and the
terminal observations of the REST sweep) and returns the :class:`CallState` (:mod:`workers.state`)
by the rules of docs/contracts.md, "Reconciliation rules". No I/O, no clock: the result depends only
on the SET of distinct events, never on their order or on how many times one was delivered, so any worker that
reduces the same set writes the same bytes. Every choice below is therefore made by a total order
over events whose last key is the event's canonical bytes (distinct events never share them).

Re-splits (docs/redis-schema.md, "Re-splits"). Events that are splits of the same signed
concatenation (:meth:`Event.slot`) count as one: the one with the greatest
:meth:`Event.preference`, which is Twilio's own split whenever it is among them. Events sharing an
identity are resolved the same way. So adding any re-split of a stored callback changes nothing.

Nothing in an event's parameters can make this module raise: Twilio adds parameters and values
without notice, and a value we cannot read becomes ``null``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from callstate.event import Event, parse_sequence_number, parse_timestamp
from callstate.status import CALL_STATUS_RANK, RECORDING_STATUS_RANK, TERMINAL_STATUSES, UNKNOWN_RANK
from workers.state import CallEventEntry, CallState, Recording

#: Call parameters taken from the greatest call event that carries a non-empty value.
_CARRIED: Final = ("AccountSid", "ParentCallSid", "Direction", "From", "To", "AnsweredBy")

#: Twilio's own ``Timestamp`` shape; anything else goes through :func:`parse_timestamp`. The year
#: starts with 1-9 because the generic parser reads years below 100 as two-digit years.
_TWILIO_TIME: Final = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"([1-9]\d{3}) (\d\d):(\d\d):(\d\d) [+-]0000"
)
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_NO_TIME: Final = float("-inf")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)  # stands in for a missing time after the None test


class _Seen:
    """One distinct event with the facts reduction needs, each parsed once."""

    __slots__ = ("canonical", "event", "fields", "rank", "seq", "time", "time_key")

    def __init__(self, event: Event, fields: dict[str, str], canonical: bytes) -> None:
        self.event = event
        self.fields = fields
        self.canonical = canonical
        self.seq: int | None = None
        self.rank = UNKNOWN_RANK
        self.time: datetime | None = None
        self.time_key = _NO_TIME


def reduce(call_sid: str, events: Iterable[Event], tenant: str | None = None) -> CallState:
    """The reconciled state of call ``call_sid`` from its call and recording events, as vouched for
    by ``tenant``'s token (``None``: the main token).

    Events of another call or another tenant, recording events without a ``RecordingSid`` and events
    of an unknown kind are ignored. Duplicates (equal canonical content) count once; of the events
    sharing a slot (:meth:`Event.slot`), then of those sharing an identity (:meth:`Event.identity`),
    the one with the greatest :meth:`Event.preference` is kept.
    """
    # Keyed like Event.slot() but by the signed concatenation itself (params are in canonical
    # order), and preferences computed only where two events meet: reduce runs for every call of
    # every job, and a slot almost always holds one event.
    by_slot: dict[tuple[str, str, str], Event] = {}
    for event in set(events):
        if event.tenant != tenant:
            continue
        slot = (event.kind, event.source, "".join([name + value for name, value in event.params]))
        kept = by_slot.get(slot)
        if kept is None or event.preference() > kept.preference():
            by_slot[slot] = event

    by_identity: dict[tuple[Any, ...], _Seen] = {}
    for event in by_slot.values():
        # Event.fields(), inlined: reduce runs for every call of every job.
        fields = dict(reversed(event.params))
        if fields.get("CallSid") != call_sid:
            continue
        canonical = event.canonical()
        # Mirrors Event.identity() without re-reading the params.
        if event.kind == "call":
            seq = parse_sequence_number(fields.get("SequenceNumber"))
            key: tuple[Any, ...] = (
                ("~", canonical) if seq is None else ("c", seq, fields.get("CallStatus") or "")
            )
        elif event.kind == "recording" and fields.get("RecordingSid"):
            key = ("r", fields["RecordingSid"], fields.get("RecordingStatus") or "")
        else:
            continue
        chosen = by_identity.get(key)
        if chosen is None or event.preference() > chosen.event.preference():
            by_identity[key] = _Seen(event, fields, canonical)

    calls: list[_Seen] = []
    recordings: dict[str, list[_Seen]] = {}
    for seen in by_identity.values():
        if seen.event.kind == "call":
            _read_call_facts(seen)
            calls.append(seen)
        else:
            status = seen.fields.get("RecordingStatus")
            seen.rank = RECORDING_STATUS_RANK.get(status, 0) if status else 0
            recordings.setdefault(seen.fields["RecordingSid"], []).append(seen)
    return _call_state(call_sid, calls, recordings)


def _read_call_facts(seen: _Seen) -> None:
    fields = seen.fields
    seen.seq = parse_sequence_number(fields.get("SequenceNumber"))
    status = fields.get("CallStatus")
    if status:
        seen.rank = CALL_STATUS_RANK.get(status, UNKNOWN_RANK)
    seen.time = _parse_time(fields.get("Timestamp"))
    if seen.time is not None:
        seen.time_key = seen.time.timestamp()


def _call_state(call_sid: str, calls: list[_Seen], recordings: dict[str, list[_Seen]]) -> CallState:
    # Greatest first by (rank, SequenceNumber, Timestamp, canonical bytes); missing values lowest.
    ordered = sorted(
        calls,
        key=lambda s: (s.rank, -1 if s.seq is None else s.seq, s.time_key, s.canonical),
        reverse=True,
    )
    winner = ordered[0] if ordered and ordered[0].rank != UNKNOWN_RANK else None
    status = winner.fields["CallStatus"] if winner is not None else None
    final = status in TERMINAL_STATUSES
    carried = {name: _first_carried(ordered, name) for name in _CARRIED}
    account_sid = carried["AccountSid"]
    reduced_recordings = sorted(
        (_recording(sid, seen) for sid, seen in recordings.items()),
        key=lambda r: (r.start_time is None, r.start_time or _EPOCH, r.sid),
    )
    if account_sid is None:
        every = [seen for group in recordings.values() for seen in group]
        every.sort(key=lambda s: (s.rank, s.canonical), reverse=True)
        account_sid = _first_carried(every, "AccountSid")
    sequence_numbers = [s.seq for s in calls if s.seq is not None]
    times = [s.time for s in calls if s.time is not None]
    listed = sorted(
        calls,
        key=lambda s: (s.seq is None, s.seq or 0, s.rank, s.time_key, s.canonical),
    )
    return CallState(
        sid=call_sid,
        account_sid=account_sid,
        parent_call_sid=carried["ParentCallSid"],
        direction=carried["Direction"],
        from_=carried["From"],
        to=carried["To"],
        status=status,
        final=final,
        duration=_int(winner.fields.get("CallDuration")) if final and winner else None,
        sip_response_code=_int(winner.fields.get("SipResponseCode")) if final and winner else None,
        answered_by=carried["AnsweredBy"],
        sequence_number=max(sequence_numbers, default=None),
        events=tuple(
            CallEventEntry(s.seq, s.fields.get("CallStatus") or None, s.time, s.event.source) for s in listed
        ),
        recordings=tuple(reduced_recordings),
        updated_at=max(times, default=None),
    )


def _recording(sid: str, group: list[_Seen]) -> Recording:
    """One recording: each field from the greatest of its events (by status rank) that carries it."""
    group.sort(key=lambda s: (s.rank, s.canonical), reverse=True)
    status = _first_carried(group, "RecordingStatus")
    return Recording(
        sid=sid,
        status=status,
        url=_first_carried(group, "RecordingUrl"),
        duration=_int(_first_carried(group, "RecordingDuration")),
        channels=_int(_first_carried(group, "RecordingChannels")),
        source=_first_carried(group, "RecordingSource"),
        track=_first_carried(group, "RecordingTrack"),
        start_time=_parse_time(_first_carried(group, "RecordingStartTime")),
        error_code=_int(_first_carried(group, "ErrorCode")),
    )


def _first_carried(ordered: list[_Seen], name: str) -> str | None:
    for seen in ordered:
        value = seen.fields.get(name)
        if value:
            return value
    return None


def _int(value: str | None) -> int | None:
    """A non-negative decimal integer, or ``None``. The 18-digit cap keeps the value inside a signed
    64-bit integer, the largest orjson serializes."""
    if value and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _parse_time(value: str | None) -> datetime | None:
    """:func:`parse_timestamp`, with a fast path for Twilio's own shape (reduce runs per job)."""
    return _parse_time_cached(value) if value else None


# A worker reduces the same call again at each of its events, so the same few strings come back.
@functools.lru_cache(maxsize=4096)
def _parse_time_cached(value: str) -> datetime | None:
    match = _TWILIO_TIME.fullmatch(value)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
        try:
            return datetime(
                int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
            )
        except ValueError:
            pass  # e.g. 31 Feb: the generic parser decides (it answers None).
    return parse_timestamp(value)
