"""workers.timeline, pure: the order of a call's timeline and what each entry says."""

from __future__ import annotations

import random

from callstate.event import Event
from tests.twiliosign import ACCOUNT, call_params, call_sid
from workers.deliveries import Delivery
from workers.timeline import entries, render

SID = call_sid(7)


def recording(status: str) -> Event:
    params = [("AccountSid", ACCOUNT), ("CallSid", SID), ("RecordingSid", "RE" + "1" * 32),
              ("RecordingStatus", status)]  # fmt: skip
    return Event.create("recording", params)


EVENTS = [
    Event.create("call", call_params(SID, "completed", 3)),
    Event.create("call", call_params(SID, "initiated", 0)),
    Event.create("call", call_params(SID, "ringing", None)),
    Event.create("call", call_params(SID, "completed", None), source="rest"),
    recording("completed"),
    recording("in-progress"),
]


def test_order_is_sequence_then_unsequenced_then_recordings_whatever_the_storage_order() -> None:
    stored = {event.slot(): event for event in EVENTS}
    shuffled = list(stored.items())
    random.Random(4).shuffle(shuffled)
    timeline = entries(dict(shuffled), {})
    assert [(e.kind, e.sequence_number, e.status) for e in timeline] == [
        ("call", 0, "initiated"),
        ("call", 3, "completed"),
        ("call", None, "ringing"),
        ("call", None, "completed"),
        ("recording", None, "in-progress"),
        ("recording", None, "completed"),
    ]
    assert timeline[3].source == "rest"


def test_deliveries_are_matched_by_event_set_field() -> None:
    first = EVENTS[1]
    timeline = entries({first.slot(): first}, {first.slot(): Delivery(3, 1_790_000_000.0)})
    [entry] = timeline
    assert (entry.deliveries, entry.received_at) == (3, "2026-09-21T14:13:20Z")


def test_an_event_stored_before_deliveries_were_counted_shows_zero() -> None:
    [entry] = entries({EVENTS[0].slot(): EVENTS[0]}, {})
    assert (entry.deliveries, entry.received_at) == (0, None)


def test_render_without_state_says_so() -> None:
    text = render(SID, None, entries({EVENTS[0].slot(): EVENTS[0]}, {}))
    assert text.splitlines()[0] == f"call {SID}: no state yet (1 event(s) stored, not reconciled)"
