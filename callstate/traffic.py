"""Realistic Twilio voice traffic: what Twilio sends for a call, as :class:`Event` values.

The one copy of that knowledge: ``callstate simulate`` sends it, the property tests reduce it and
``make bench`` replays it. Pure: no I/O, no clock; every decision comes from a :class:`Choices`, so
the same code serves a seeded :class:`random.Random` (:class:`RandomChoices`: the simulator and the
benchmark, reproducible for a seed) and hypothesis (the tests wrap ``draw``; shrinking works).

What one call sends (docs/twilio.md, "Status callback events", "Status callback parameters", "Child
legs", "Recording callbacks", "Lost callbacks"): the progress events it subscribed to
(``initiated``, ``ringing``, ``answered`` -> ``in-progress``, ``completed``) with consecutive
``SequenceNumber`` from 0 and an RFC 2822 ``Timestamp``; the terminal event with ``CallDuration``,
``SipResponseCode`` and (completed only) billed ``Duration``; Twilio's standard parameters with the
geographic ones; ``<Dial>`` child legs (``outbound-dial`` with ``ParentCallSid``); inbound number-level
callbacks (``completed`` only, maybe without the progress parameters); answering-machine
detection (``AnsweredBy``); recordings (mono or dual channel, ``in-progress`` then ``completed``,
``absent`` or ``failed``, on the parent leg); callbacks lost on the way (some, the terminal one, or
all but the recordings); REST-sweep observations. :func:`arrival_order` then interleaves calls,
reorders each call's callbacks and repeats some, as Twilio's separate HTTP requests and retries do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Final, Protocol, TypeVar

from callstate.event import Event, Kind

T = TypeVar("T")

#: Where each kind of callback is sent (README, "Endpoints").
PATHS: Final[dict[Kind, str]] = {"call": "/twilio/call-status", "recording": "/twilio/recording-status"}

#: Per outcome: the CallStatus values fired in order, and the SipResponseCode values it ends with.
OUTCOMES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "completed": (("initiated", "ringing", "in-progress", "completed"), ("200",)),
    "busy": (("initiated", "busy"), ("486", "600")),
    "no-answer": (("initiated", "ringing", "no-answer"), ("487", "480")),
    "failed": (("initiated", "failed"), ("404", "503", "500")),
    "canceled": (("initiated", "ringing", "canceled"), ("487",)),
}
#: The CallStatus values that end a call.
TERMINAL: Final = frozenset(OUTCOMES)
#: CallStatus -> the StatusCallbackEvent that fires it ("answered" fires in-progress).
_SUBSCRIPTION_EVENT: Final = {
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    "completed": "completed",
    "busy": "completed",
    "no-answer": "completed",
    "failed": "completed",
    "canceled": "completed",
}
_PLACES: Final = (
    ("SAN FRANCISCO", "CA", "94105", "US"),
    ("NEW YORK", "NY", "10001", "US"),
    ("CHICAGO", "IL", "60601", "US"),
    ("", "", "", "US"),
    ("LONDON", "", "", "GB"),
)
_RECORDING_SOURCES: Final = ("OutboundAPI", "DialVerb", "StartCallRecordingTwiML", "RecordVerb")
_ANSWERED_BY: Final = ("human", "machine_start", "machine_end_beep", "fax", "unknown")


class Choices(Protocol):
    """Where the generator's decisions come from."""

    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def flag(self) -> bool: ...


class RandomChoices:
    """Decisions from a seeded :class:`random.Random`: the same seed, the same traffic."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def flag(self) -> bool:
        return self.rng.random() < 0.5


@dataclass(frozen=True, slots=True)
class CallHistory:
    """One call as the simulator knows it: the truth (``outcome``) and the events Twilio sends
    for it (some maybe lost: ``events`` is what leaves Twilio, not everything that happened)."""

    sid: str
    outcome: str
    direction: str
    events: tuple[Event, ...]


def sid(c: Choices, prefix: str) -> str:
    """A Twilio SID: two letters and 32 hex digits."""
    return f"{prefix}{c.integer(0, 2**128 - 1):032x}"


def _e164(c: Choices) -> str:
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


def _call(
    c: Choices,
    call_sid: str,
    *,
    start: datetime | None,
    account: str | None,
    parent: str | None = None,
    legs: Sequence[str] = ("outbound-api", "outbound-api", "inbound", "outbound-dial"),
    outcome: str | None = None,
) -> _Call:
    account = account or sid(c, "AC")
    leg = "outbound-dial" if parent is not None else c.choice(legs)
    outcome = outcome or c.choice(tuple(OUTCOMES))
    ours, theirs = _e164(c), _e164(c)
    caller, called = (theirs, ours) if leg == "inbound" else (ours, theirs)
    here, there = c.choice(_PLACES), c.choice(_PLACES)
    common = [
        ("AccountSid", account),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("Direction", leg),
        ("From", caller),
        ("Caller", caller),
        ("To", called),
        ("Called", called),
        *_geo("From", here),
        *_geo("Caller", here),
        *_geo("To", there),
        *_geo("Called", there),
    ]
    if leg == "outbound-dial":
        common.append(("ParentCallSid", parent or sid(c, "CA")))
    if c.integer(0, 5) == 0:
        common.append(("SomeFutureParam", "x"))  # Twilio adds parameters without notice
    if start is None:
        start = datetime(
            2026, c.integer(1, 12), c.integer(1, 28), c.integer(0, 23), c.integer(0, 59), tzinfo=UTC
        )
    else:
        start += timedelta(seconds=c.integer(0, 300))
    duration = c.integer(1, 900) if outcome == "completed" else 0
    return _Call(call_sid, account, leg, outcome, caller, called, start, duration, common)


def _progress_events(c: Choices, call: _Call, subscribed: set[str] | None = None) -> list[Event]:
    """The call-progress callbacks of the events the call subscribed to, with consecutive sequences."""
    # Number-level callbacks on inbound calls: completed only, maybe without progress parameters.
    if subscribed is None:
        if call.leg == "inbound" or c.integer(0, 3) == 0:
            subscribed = {"completed"}
        else:
            subscribed = {"completed"} | {e for e in ("initiated", "ringing", "answered") if c.flag()}
    progress_params = not (call.leg == "inbound" and c.flag())
    amd = call.leg == "outbound-api" and call.outcome == "completed" and c.integer(0, 2) == 0
    answered_by = c.choice(_ANSWERED_BY)
    fired, sip_codes = OUTCOMES[call.outcome]
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


def _rest_event(c: Choices, call: _Call) -> Event:
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


def _recording(c: Choices, call: _Call) -> list[Event]:
    """The callbacks of one recording: maybe in-progress, then completed, absent or failed."""
    account, call_duration = call.account, call.duration
    recording_sid = sid(c, "RE")
    offset = c.integer(0, call_duration)
    base = [
        ("AccountSid", account),
        ("CallSid", call.sid),
        ("RecordingSid", recording_sid),
        ("RecordingUrl", f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{recording_sid}"),
        ("RecordingChannels", c.choice(("1", "2"))),  # mono, or dual channel (one per party)
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


def _lose(c: Choices, events: list[Event], recordings: list[Event]) -> list[Event]:
    """Callbacks lost on the way (Twilio retries a failed delivery once at most), or not arrived
    yet; a history always keeps at least one event."""
    lost = c.choice(("none", "none", "none", "some", "terminal", "calls"))
    if lost == "some":
        kept = [event for event in events if c.integer(0, 3) != 0]
        events = kept or events
    elif lost == "terminal" and len(events) > 1:
        events = events[:-1]  # the last one fired is the terminal one
    elif lost == "calls" and recordings:
        events = []  # only the recording callbacks have arrived so far
    return events + recordings


def _history(
    c: Choices,
    call_sid: str,
    *,
    start: datetime | None = None,
    account: str | None = None,
    parent: str | None = None,
    legs: Sequence[str] = ("outbound-api", "outbound-api", "inbound", "outbound-dial"),
    rest: bool = True,
) -> CallHistory:
    call = _call(c, call_sid, start=start, account=account, parent=parent, legs=legs)
    events = _progress_events(c, call)
    if rest and c.integer(0, 4) == 0:
        events.append(_rest_event(c, call))
    # Recordings carry the parent leg's CallSid, so a child leg has none.
    recordings: list[Event] = []
    if call.outcome == "completed" and call.leg != "outbound-dial":
        for _ in range(c.choice((0, 0, 1, 1, 2, 3))):
            recordings += _recording(c, call)
    return CallHistory(call_sid, call.outcome, call.leg, tuple(_lose(c, events, recordings)))


def call_history(c: Choices, call_sid: str) -> list[Event]:
    """One call's events as Twilio (and the REST sweep) would produce them, some maybe lost."""
    return list(_history(c, call_sid).events)


def make_history(rng: random.Random, call_sid: str) -> list[Event]:
    """One realistic history for ``call_sid`` chosen by ``rng`` (deterministic for a seed)."""
    return call_history(RandomChoices(rng), call_sid)


def simulated_calls(
    rng: random.Random, count: int, *, start: datetime, account: str | None = None
) -> list[CallHistory]:
    """``count`` calls that began shortly after ``start``, as Twilio would call back about them.

    Top-level calls are ``outbound-api`` or ``inbound``; an answered one is sometimes followed by
    the ``<Dial>`` child legs it placed (``outbound-dial``, its SID as ``ParentCallSid``). Only what
    travels over HTTP: no REST-sweep observations. Every call has at least one callback.
    """
    c = RandomChoices(rng)
    account = account or sid(c, "AC")
    calls: list[CallHistory] = []
    while len(calls) < count:
        parent = _history(
            c, sid(c, "CA"), start=start, account=account, legs=("outbound-api", "inbound"), rest=False
        )
        calls.append(parent)
        if parent.outcome == "completed":
            # <Dial> with one number, or several dialed at once (the losers end canceled or no-answer).
            for _ in range(c.choice((0, 0, 1, 1, 2)) if len(calls) < count else 0):
                child = _history(c, sid(c, "CA"), start=start, account=account, parent=parent.sid, rest=False)
                calls.append(child)
                if len(calls) == count:
                    break
    return calls


def answered_call(rng: random.Random, call_sid: str) -> list[Event]:
    """The four status callbacks (``initiated``, ``ringing``, ``in-progress``, ``completed``) of one
    answered outbound-api call that subscribed to every event: the benchmark's steady traffic."""
    c = RandomChoices(rng)
    call = _call(c, call_sid, start=None, account=None, legs=("outbound-api",), outcome="completed")
    return _progress_events(c, call, subscribed={"initiated", "ringing", "answered", "completed"})


def arrival_order(
    rng: random.Random, histories: Sequence[Sequence[Event]], window: int, duplicates: float
) -> list[Event]:
    """The events of ``histories`` in the order they reach the receiver.

    Every event of call ``i`` lands at a random place among calls ``i .. i + window`` (so a call's
    events arrive out of order, interleaved with other calls); a ``duplicates`` share of them is
    delivered a second time, later (a retry whose first answer was lost: same body, same signature).
    """
    keyed: list[tuple[float, int, Event]] = []
    for index, events in enumerate(histories):
        for event in events:
            arrival = index + rng.uniform(0, window)
            keyed.append((arrival, len(keyed), event))
            if rng.random() < duplicates:
                keyed.append((arrival + rng.uniform(0, window), len(keyed), event))
    keyed.sort(key=lambda item: item[:2])
    return [event for _, _, event in keyed]
