"""Realistic Twilio call histories, as lists of :class:`Event`, for property tests and benchmarks.

One builder (:func:`_history`) describes what Twilio sends for one call (reference sections 1 and 2):
the subscribed progress events with consecutive ``SequenceNumber`` from 0, a terminal event with
``CallDuration`` and ``SipResponseCode``, child legs, inbound number-level callbacks, answering-machine
detection, recordings, REST-sweep observations and lost callbacks. It takes its decisions from a
:class:`_Choices`, so the same code serves hypothesis (:func:`call_histories`, which shrinks well) and
a seeded :class:`random.Random` (:func:`make_history`, for benchmarks).

Imported as ``histories`` (tests run in rootdir mode with ``pythonpath = ["tests"]``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Protocol, TypeVar

from hypothesis import strategies as st

from callstate.event import Event

T = TypeVar("T")

#: Per outcome: the CallStatus values fired in order, and the SipResponseCode values it ends with.
_OUTCOMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "completed": (("initiated", "ringing", "in-progress", "completed"), ("200",)),
    "busy": (("initiated", "busy"), ("486", "600")),
    "no-answer": (("initiated", "ringing", "no-answer"), ("487", "480")),
    "failed": (("initiated", "failed"), ("404", "503", "500")),
    "canceled": (("initiated", "ringing", "canceled"), ("487",)),
}
#: StatusCallbackEvent name -> the CallStatus values it fires with.
_SUBSCRIPTION_EVENT: dict[str, str] = {
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    "completed": "completed",
    "busy": "completed",
    "no-answer": "completed",
    "failed": "completed",
    "canceled": "completed",
}
_PLACES = (
    ("SAN FRANCISCO", "CA", "94105", "US"),
    ("NEW YORK", "NY", "10001", "US"),
    ("", "", "", "US"),
    ("LONDON", "", "", "GB"),
)
_RECORDING_SOURCES = ("OutboundAPI", "DialVerb", "StartCallRecordingTwiML", "RecordVerb")


class _Choices(Protocol):
    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def flag(self) -> bool: ...


class _RandomChoices:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def flag(self) -> bool:
        return self.rng.random() < 0.5


class _DrawChoices:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def flag(self) -> bool:
        return self.draw(st.booleans())


def _sid(c: _Choices, prefix: str) -> str:
    return f"{prefix}{c.integer(0, 2**128 - 1):032x}"


def _e164(c: _Choices) -> str:
    return f"+1{c.integer(2, 9)}{c.integer(0, 999_999_999):09d}"


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment)  # "Tue, 01 Sep 2026 12:00:00 +0000", as Twilio writes it


def _geo(prefix: str, place: tuple[str, str, str, str]) -> list[tuple[str, str]]:
    return [
        (prefix + name, value) for name, value in zip(("City", "State", "Zip", "Country"), place, strict=True)
    ]


@dataclass(frozen=True)
class _Call:
    """The facts of one call that its events share."""

    sid: str
    account: str
    leg: str
    outcome: str
    caller: str
    called: str
    start: datetime
    duration: int
    common: list[tuple[str, str]]


def _call(c: _Choices, call_sid: str) -> _Call:
    account = _sid(c, "AC")
    leg = c.choice(("outbound-api", "outbound-api", "inbound", "outbound-dial"))
    outcome = c.choice(tuple(_OUTCOMES))
    ours, theirs = _e164(c), _e164(c)
    caller, called = (theirs, ours) if leg == "inbound" else (ours, theirs)
    common = [
        ("AccountSid", account),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("Direction", leg),
        ("From", caller),
        ("Caller", caller),
        ("To", called),
        ("Called", called),
        *_geo("From", c.choice(_PLACES)),
        *_geo("To", c.choice(_PLACES)),
    ]
    if leg == "outbound-dial":
        common.append(("ParentCallSid", _sid(c, "CA")))
    if c.integer(0, 5) == 0:
        common.append(("SomeFutureParam", "x"))  # Twilio adds parameters without notice
    start = datetime(2026, c.integer(1, 12), c.integer(1, 28), c.integer(0, 23), c.integer(0, 59), tzinfo=UTC)
    duration = c.integer(1, 900) if outcome == "completed" else 0
    return _Call(call_sid, account, leg, outcome, caller, called, start, duration, common)


def _progress_events(c: _Choices, call: _Call) -> list[Event]:
    """The call-progress callbacks of the events the call subscribed to, with consecutive sequences."""
    # Number-level callbacks on inbound calls: completed only, maybe without progress parameters.
    if call.leg == "inbound" or c.integer(0, 3) == 0:
        subscribed = {"completed"}
    else:
        subscribed = {"completed"} | {e for e in ("initiated", "ringing", "answered") if c.flag()}
    progress_params = not (call.leg == "inbound" and c.flag())
    amd = call.leg == "outbound-api" and call.outcome == "completed" and c.integer(0, 2) == 0
    answered_by = c.choice(("human", "machine_start", "fax", "unknown"))
    fired, sip_codes = _OUTCOMES[call.outcome]
    moment = call.start
    events: list[Event] = []
    for status in fired:
        moment += timedelta(seconds=call.duration if status == call.outcome else c.integer(0, 20))
        if _SUBSCRIPTION_EVENT[status] not in subscribed:
            continue
        params = [*call.common, ("CallStatus", status)]
        if progress_params:
            params += [
                ("CallbackSource", "call-progress-events"),
                ("SequenceNumber", str(len(events))),
                ("Timestamp", _rfc2822(moment)),
            ]
        if status in ("ringing", "in-progress") and c.flag():
            params.append(("StirStatus", c.choice(("A", "B", "C"))))
        if amd and status in ("in-progress", "completed"):
            params.append(("AnsweredBy", answered_by))
        if status == call.outcome:
            params += [("CallDuration", str(call.duration)), ("SipResponseCode", c.choice(sip_codes))]
            if status == "completed":
                params.append(("Duration", str(-(-call.duration // 60))))  # billed minutes, rounded up
        events.append(Event.create("call", params))
    return events


def _rest_event(c: _Choices, call: _Call) -> Event:
    """What the REST sweep records when it sees the call ended: named like a callback, no sequence."""
    seen_at = call.start + timedelta(seconds=call.duration + c.integer(60, 900))
    params = [
        ("AccountSid", call.account),
        ("CallSid", call.sid),
        ("CallStatus", call.outcome),
        ("CallDuration", str(call.duration)),
        ("Direction", call.leg),
        ("From", call.caller),
        ("To", call.called),
        ("Timestamp", _rfc2822(seen_at)),
    ]
    return Event.create("call", params, source="rest")


def _history(c: _Choices, call_sid: str) -> list[Event]:
    """One call's events as Twilio (and the REST sweep) would produce them, some maybe lost."""
    call = _call(c, call_sid)
    events = _progress_events(c, call)
    if c.integer(0, 4) == 0:
        events.append(_rest_event(c, call))
    # Recordings carry the parent leg's CallSid, so a child leg has none.
    recordings: list[Event] = []
    if call.outcome == "completed" and call.leg != "outbound-dial":
        for _ in range(c.choice((0, 0, 1, 1, 2, 3))):
            recordings += _recording(c, call)
    # Some callbacks lost or not arrived yet, but a history always has at least one event.
    lost = c.choice(("none", "none", "none", "some", "calls"))
    if lost == "some":
        kept = [event for event in events if c.integer(0, 3) != 0]
        events = kept or events
    elif lost == "calls" and recordings:
        events = []  # only the recording callbacks have arrived so far
    return events + recordings


def _recording(c: _Choices, call: _Call) -> list[Event]:
    """The callbacks of one recording: maybe in-progress, then completed, absent or failed."""
    account, call_duration = call.account, call.duration
    sid = _sid(c, "RE")
    offset = c.integer(0, call_duration)
    base = [
        ("AccountSid", account),
        ("CallSid", call.sid),
        ("RecordingSid", sid),
        ("RecordingUrl", f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}"),
        ("RecordingChannels", c.choice(("1", "2"))),
        ("RecordingSource", c.choice(_RECORDING_SOURCES)),
        ("RecordingTrack", c.choice(("both", "inbound", "outbound"))),
        ("RecordingStartTime", _rfc2822(call.start + timedelta(seconds=offset))),
    ]
    events = []
    if c.flag():
        events.append(Event.create("recording", [*base, ("RecordingStatus", "in-progress")]))
    ending = c.choice(("completed", "completed", "absent", "failed"))
    last = [*base, ("RecordingStatus", ending)]
    if ending == "completed":
        last.append(("RecordingDuration", str(c.integer(1, max(1, call_duration - offset)))))
        if c.flag():
            last.append(("ErrorCode", "0"))  # seen on success in practice
    elif ending == "absent":
        last.append(("ErrorCode", c.choice(("16101", "16102"))))
    events.append(Event.create("recording", last))
    return events


@st.composite
def call_histories(draw: st.DrawFn) -> tuple[str, list[Event]]:
    """A call SID and the distinct events (at least one) of one realistic call history."""
    choices = _DrawChoices(draw)
    call_sid = _sid(choices, "CA")
    return call_sid, _history(choices, call_sid)


def make_history(rng: random.Random, call_sid: str) -> list[Event]:
    """One realistic history for ``call_sid`` chosen by ``rng`` (deterministic for a seed)."""
    return _history(_RandomChoices(rng), call_sid)


def redelivered(event: Event, attempt: int = 1) -> Event:
    """Another delivery of the same request: equal content, different delivery metadata."""
    return Event.create(
        event.kind,
        event.params,
        source=event.source,
        received_at=1_780_000_000.0 + attempt,
        idempotency_token=f"retry-{attempt}",
    )


def shuffled_with_duplicates(events: Sequence[Event]) -> st.SearchStrategy[list[Event]]:
    """``events`` in any order, some of them delivered more than once."""
    base = list(events)
    if not base:
        return st.just([])
    extra = st.lists(st.tuples(st.sampled_from(base), st.integers(1, 3)), max_size=len(base) + 2)
    return extra.flatmap(
        lambda repeats: st.permutations(base + [redelivered(event, n) for event, n in repeats])
    )
