"""Tests of workers.reduce: docs/contracts.md, "Reconciliation rules"."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstate.event import Event, parse_timestamp
from tests.histories import call_histories, redelivered, shuffled_with_duplicates
from workers.reduce import _parse_time, reduce
from workers.state import CallState

CALL = "CA" + "a" * 32
PARENT = "CA" + "b" * 32
ACCOUNT = "AC" + "c" * 32
REC1 = "RE" + "1" * 32
REC2 = "RE" + "2" * 32
REC3 = "RE" + "3" * 32


def at(second: int) -> str:
    """An RFC 2822 Timestamp ``second`` seconds after 12:00:00, as Twilio writes it."""
    return f"Tue, 01 Sep 2026 12:{second // 60:02d}:{second % 60:02d} +0000"


def call(seq: int | None, status: str | None, second: int | None = None, **extra: str) -> Event:
    """A call-progress callback of CALL with realistic standard parameters."""
    params = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "CallSid": CALL,
        "Direction": "outbound-api",
        "From": "+14155551212",
        "Caller": "+14155551212",
        "To": "+15017122661",
        "Called": "+15017122661",
        "CallbackSource": "call-progress-events",
    }
    if status is not None:
        params["CallStatus"] = status
    if seq is not None:
        params["SequenceNumber"] = str(seq)
    if second is not None:
        params["Timestamp"] = at(second)
    params.update(extra)
    return Event.create("call", params.items())


def recording(sid: str, status: str, **extra: str) -> Event:
    """A recording-status callback of CALL."""
    params = [
        ("AccountSid", ACCOUNT),
        ("CallSid", CALL),
        ("RecordingSid", sid),
        ("RecordingStatus", status),
        ("RecordingUrl", f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}"),
        *extra.items(),
    ]
    return Event.create("recording", params)


def answered_call() -> list[Event]:
    return [
        call(0, "initiated", 0),
        call(1, "ringing", 3),
        call(2, "in-progress", 9),
        call(3, "completed", 51, CallDuration="42", SipResponseCode="200", Duration="1"),
    ]


def statuses(state: CallState) -> list[str | None]:
    return [entry.status for entry in state.events]


class TestOrderIndependence:
    @settings(max_examples=150, deadline=None)
    @given(call_histories(), st.data())
    def test_any_order_and_duplication_gives_the_same_bytes(
        self, history: tuple[str, list[Event]], data: st.DataObject
    ) -> None:
        """Every permutation of a history, with redeliveries, reduces to byte-identical JSON."""
        call_sid, events = history
        expected = reduce(call_sid, events).to_json()
        shuffled = data.draw(shuffled_with_duplicates(events))
        assert reduce(call_sid, shuffled).to_json() == expected

    @settings(max_examples=50, deadline=None)
    @given(call_histories())
    def test_json_round_trips(self, history: tuple[str, list[Event]]) -> None:
        """from_json(to_json()) gives back the same state and the same bytes."""
        state = reduce(*history)
        assert CallState.from_json(state.to_json()) == state
        assert CallState.from_json(state.to_json()).to_json() == state.to_json()

    @settings(max_examples=50, deadline=None)
    @given(call_histories(), st.data())
    def test_same_identity_resolves_like_the_preferred_one(
        self, history: tuple[str, list[Event]], data: st.DataObject
    ) -> None:
        """Variants sharing an Event.identity() reduce as if only the preferred one existed."""
        call_sid, events = history
        variants = [
            Event.create(e.kind, [*e.params, ("Variant", v)], source=e.source)
            for e, v in data.draw(st.lists(st.tuples(st.sampled_from(events), st.text(max_size=3))))
        ]
        everything = events + variants
        preferred: dict[str, Event] = {}
        for event in everything:
            kept = preferred.get(event.identity())
            if kept is None or event.preference() > kept.preference():
                preferred[event.identity()] = event
        expected = reduce(call_sid, list(preferred.values())).to_json()
        assert reduce(call_sid, data.draw(st.permutations(everything))).to_json() == expected

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["call", "recording"]),
                st.lists(
                    st.tuples(
                        st.sampled_from(
                            [
                                "CallStatus",
                                "SequenceNumber",
                                "Timestamp",
                                "CallDuration",
                                "SipResponseCode",
                                "AnsweredBy",
                                "AccountSid",
                                "From",
                                "To",
                                "Direction",
                                "ParentCallSid",
                                "RecordingStatus",
                                "RecordingSid",
                                "RecordingDuration",
                                "RecordingChannels",
                                "RecordingStartTime",
                                "ErrorCode",
                                "RecordingUrl",
                                "CallSid",
                            ]
                        ),
                        st.one_of(st.text(max_size=40), st.sampled_from(["0", "3", "completed", at(7)])),
                    ),
                    max_size=8,
                ),
                st.sampled_from(["twilio", "rest"]),
            ),
            max_size=6,
        ),
        st.randoms(use_true_random=False),
    )
    def test_strange_values_never_raise(
        self, raw: list[tuple[str, list[tuple[str, str]], str]], rng: random.Random
    ) -> None:
        """Any string in any parameter reduces without error, independently of order."""
        events = [
            Event.create(
                "call" if kind == "call" else "recording", [("CallSid", CALL), *params], source=source
            )
            for kind, params, source in raw
        ]
        expected = reduce(CALL, events).to_json()
        rng.shuffle(events)
        assert reduce(CALL, events + events[:2]).to_json() == expected
        assert CallState.from_json(expected).to_json() == expected


class TestCallStatus:
    def test_terminal_never_regresses(self) -> None:
        """A ringing with a later SequenceNumber and Timestamp does not undo completed."""
        state = reduce(CALL, [call(1, "completed", 30, CallDuration="20"), call(2, "ringing", 40)])
        assert (state.status, state.final) == ("completed", True)

    def test_answered_arrives_as_in_progress(self) -> None:
        """The answered event's in-progress is the status of an answered, unfinished call."""
        state = reduce(CALL, answered_call()[:3])
        assert (state.status, state.final, state.duration) == ("in-progress", False, None)

    def test_completed_only_subscription(self) -> None:
        """A lone completed event with SequenceNumber 0 makes a complete, final call."""
        state = reduce(CALL, [call(0, "completed", 5, CallDuration="4", SipResponseCode="200")])
        assert (state.status, state.final, state.duration, state.sequence_number) == ("completed", True, 4, 0)
        assert len(state.events) == 1

    def test_terminal_only_fields_come_from_the_terminal_event(self) -> None:
        """duration and sip_response_code come from the winning terminal event, not from earlier ones."""
        events = [
            call(2, "in-progress", 9, CallDuration="99", SipResponseCode="100"),
            call(3, "completed", 51),
        ]
        state = reduce(CALL, events)
        assert (state.duration, state.sip_response_code) == (None, None)
        state = reduce(
            CALL, [*events[:1], call(3, "completed", 51, CallDuration="42", SipResponseCode="200")]
        )
        assert (state.duration, state.sip_response_code) == (42, 200)

    def test_non_terminal_status_has_no_terminal_fields(self) -> None:
        """A call that has not ended has null duration and sip_response_code."""
        state = reduce(CALL, [call(1, "ringing", 3, CallDuration="7", SipResponseCode="180")])
        assert (state.duration, state.sip_response_code) == (None, None)

    @pytest.mark.parametrize(
        ("status", "code"), [("busy", "486"), ("no-answer", "487"), ("failed", "404"), ("canceled", "487")]
    )
    def test_unsuccessful_endings_are_final_with_their_sip_code(self, status: str, code: str) -> None:
        """busy, no-answer, failed and canceled are final and keep their SipResponseCode."""
        events = [call(0, "initiated", 0), call(1, status, 20, CallDuration="0", SipResponseCode=code)]
        state = reduce(CALL, events)
        assert (state.status, state.final, state.duration, state.sip_response_code) == (
            status,
            True,
            0,
            int(code),
        )

    def test_terminal_ties_go_to_the_higher_sequence_number(self) -> None:
        """Of two terminal events, the one with the higher SequenceNumber wins."""
        state = reduce(CALL, [call(4, "completed", 10), call(3, "no-answer", 20)])
        assert state.status == "completed"

    def test_unknown_status_is_kept_but_never_wins(self) -> None:
        """An unknown CallStatus is listed in events, below queued, and never becomes the status."""
        state = reduce(CALL, [call(1, "ringing", 3), call(5, "answering-machine", 9)])
        assert state.status == "ringing"
        assert statuses(state) == ["ringing", "answering-machine"]
        assert state.sequence_number == 5

    def test_only_unknown_or_missing_statuses_give_a_null_status(self) -> None:
        """A call whose events have unknown or no CallStatus has status null and is not final."""
        state = reduce(CALL, [call(0, "dialing", 1), call(1, None, 2)])
        assert (state.status, state.final) == (None, False)
        assert state.from_ == "+14155551212"

    def test_rest_terminal_event_without_sequence_number(self) -> None:
        """A REST-sweep terminal observation ends the call and is listed last with a null sequence."""
        rest = Event.create(
            "call",
            [("CallSid", CALL), ("CallStatus", "completed"), ("CallDuration", "61"), ("Timestamp", at(90))],
            source="rest",
        )
        state = reduce(CALL, [*answered_call()[:3], rest])
        assert (state.status, state.final, state.duration, state.sequence_number) == (
            "completed",
            True,
            61,
            2,
        )
        assert state.events[-1].sequence_number is None
        assert state.events[-1].source == "rest"
        assert state.updated_at == datetime(2026, 9, 1, 12, 1, 30, tzinfo=UTC)

    def test_a_callback_beats_the_rest_observation_of_the_same_ending(self) -> None:
        """With both a terminal callback and a REST terminal event, the callback supplies the fields."""
        rest = Event.create(
            "call", [("CallSid", CALL), ("CallStatus", "completed"), ("CallDuration", "60")], source="rest"
        )
        state = reduce(CALL, [*answered_call(), rest])
        assert state.duration == 42


class TestCallFields:
    def test_child_leg_fields(self) -> None:
        """A <Dial> leg reports its ParentCallSid and the outbound-dial direction."""
        state = reduce(CALL, [call(0, "ringing", 1, ParentCallSid=PARENT, Direction="outbound-dial")])
        assert (state.parent_call_sid, state.direction) == (PARENT, "outbound-dial")

    def test_top_level_call_has_no_parent(self) -> None:
        """A first leg has a null parent_call_sid."""
        assert reduce(CALL, answered_call()).parent_call_sid is None

    def test_answered_by_comes_from_the_greatest_event_carrying_it(self) -> None:
        """AnsweredBy on in-progress is kept when the completed event lacks it."""
        events = [
            *answered_call()[:2],
            call(2, "in-progress", 9, AnsweredBy="machine_start"),
            answered_call()[3],
        ]
        assert reduce(CALL, events).answered_by == "machine_start"
        events.append(call(4, "completed", 52, AnsweredBy="human"))
        assert reduce(CALL, events).answered_by == "human"

    def test_sequence_number_and_updated_at_are_the_highest_seen(self) -> None:
        """sequence_number is the highest SequenceNumber and updated_at the latest Timestamp."""
        state = reduce(CALL, [call(3, "completed", 40), call(1, "ringing", 50)])
        assert state.sequence_number == 3
        assert state.updated_at == datetime(2026, 9, 1, 12, 0, 50, tzinfo=UTC)

    def test_events_are_listed_by_sequence_then_rank_then_timestamp(self) -> None:
        """events sort by (SequenceNumber, rank, Timestamp), events without a SequenceNumber last."""
        events = [
            call(None, "completed", 60),
            call(2, "completed", 50),
            call(2, "ringing", 49),
            call(0, "initiated", 1),
            call(2, "mystery", 48),
            call(None, "busy", 59),
        ]
        state = reduce(CALL, events)
        assert [(e.sequence_number, e.status) for e in state.events] == [
            (0, "initiated"),
            (2, "mystery"),
            (2, "ringing"),
            (2, "completed"),
            (None, "busy"),
            (None, "completed"),
        ]

    def test_unknown_params_are_ignored(self) -> None:
        """Parameters Twilio adds without notice change nothing and raise nothing."""
        plain = reduce(CALL, answered_call()).to_dict()
        extended = [
            Event.create(e.kind, [*e.params, ("BrandNewParam", "?"), ("CallerName", "x")])
            for e in answered_call()
        ]
        assert reduce(CALL, extended).to_dict() == plain

    def test_strange_values_become_null(self) -> None:
        """Unparseable SequenceNumber, CallDuration and Timestamp become null instead of raising."""
        events = [
            call(None, "completed", None, SequenceNumber="abc", CallDuration="x", Timestamp="yesterday"),
            call(None, "ringing", None, SequenceNumber="-1", Timestamp="Fri, 31 Dec 9999 23:59:59 -0100"),
        ]
        state = reduce(CALL, events)
        assert (state.status, state.duration, state.sequence_number, state.updated_at) == (
            "completed",
            None,
            None,
            None,
        )
        huge = reduce(CALL, [call(0, "completed", 1, CallDuration="9" * 30, SipResponseCode="+200")])
        assert (huge.duration, huge.sip_response_code) == (None, None)

    def test_same_identity_different_content_is_resolved_independently_of_order(self) -> None:
        """Two different completed events with one identity give one state whatever arrives first."""
        first = call(3, "completed", 51, CallDuration="42")
        second = call(3, "completed", 52, CallDuration="43")
        state = reduce(CALL, [first, second])
        assert state.to_json() == reduce(CALL, [second, first]).to_json()
        assert len(state.events) == 1
        assert state.duration == (42 if first.preference() > second.preference() else 43)

    def test_events_of_other_calls_are_ignored(self) -> None:
        """Only events whose CallSid is the reduced call count."""
        other = Event.create("call", [("CallSid", PARENT), ("CallStatus", "completed")])
        assert reduce(CALL, [*answered_call()[:2], other]).status == "ringing"

    def test_duplicates_count_once(self) -> None:
        """A redelivered callback is the same event."""
        events = answered_call()
        assert reduce(CALL, events + [redelivered(e) for e in events]).events == reduce(CALL, events).events

    def test_no_events(self) -> None:
        """An empty event set gives an empty, non-final state."""
        state = reduce(CALL, [])
        assert (state.status, state.final, state.events, state.recordings, state.updated_at) == (
            None,
            False,
            (),
            (),
            None,
        )


class TestRecordings:
    def test_recording_before_any_call_event(self) -> None:
        """A call known only from a recording callback has status null and is not final."""
        state = reduce(CALL, [recording(REC1, "completed", RecordingDuration="14")])
        assert (state.status, state.final, state.account_sid, state.events) == (None, False, ACCOUNT, ())
        assert [r.sid for r in state.recordings] == [REC1]

    def test_in_progress_then_completed(self) -> None:
        """completed supplies status and duration; in-progress still supplies what completed lacks."""
        events = [
            recording(REC1, "in-progress", RecordingChannels="2", RecordingSource="OutboundAPI"),
            recording(REC1, "completed", RecordingDuration="14", RecordingStartTime=at(9)),
        ]
        (rec,) = reduce(CALL, events).recordings
        assert (rec.status, rec.duration, rec.channels, rec.source, rec.error_code) == (
            "completed",
            14,
            2,
            "OutboundAPI",
            None,
        )
        assert rec.start_time == datetime(2026, 9, 1, 12, 0, 9, tzinfo=UTC)

    def test_absent_with_error_code(self) -> None:
        """An absent recording reports its ErrorCode as an integer."""
        events = [recording(REC1, "in-progress"), recording(REC1, "absent", ErrorCode="16102")]
        (rec,) = reduce(CALL, events).recordings
        assert (rec.status, rec.error_code, rec.duration) == ("absent", 16102, None)

    def test_several_recordings_sorted_by_start_time(self) -> None:
        """Each RecordingSid is one entry, ordered by start time, those without one last."""
        events = [
            recording(REC1, "completed", RecordingStartTime=at(30)),
            recording(REC2, "failed"),
            recording(REC3, "completed", RecordingStartTime=at(10), RecordingTrack="inbound"),
            recording(REC3, "in-progress", RecordingStartTime=at(10)),
        ]
        state = reduce(CALL, [*answered_call(), *events])
        assert [(r.sid, r.status) for r in state.recordings] == [
            (REC3, "completed"),
            (REC1, "completed"),
            (REC2, "failed"),
        ]
        assert state.recordings[0].track == "inbound"

    def test_unknown_recording_status_loses_to_a_known_one(self) -> None:
        """An unknown RecordingStatus ranks below in-progress."""
        events = [recording(REC1, "paused"), recording(REC1, "in-progress")]
        assert reduce(CALL, events).recordings[0].status == "in-progress"


class TestJson:
    def test_shape_and_key_order(self) -> None:
        """The JSON has the keys of docs/contracts.md, "The reconciled call", in order, integers as
        integers, times as ISO Z."""
        events = [
            *answered_call(),
            recording(REC1, "completed", RecordingDuration="14", RecordingChannels="2"),
        ]
        data = orjson.loads(reduce(CALL, events).to_json())
        assert list(data) == [
            "sid", "account_sid", "parent_call_sid", "direction", "from", "to", "status", "final",
            "duration", "sip_response_code", "answered_by", "sequence_number", "events", "recordings",
            "updated_at",
        ]  # fmt: skip
        assert data["from"] == "+14155551212"
        assert (data["duration"], data["sip_response_code"], data["sequence_number"]) == (42, 200, 3)
        assert data["updated_at"] == "2026-09-01T12:00:51Z"
        assert data["events"][0] == {
            "sequence_number": 0,
            "status": "initiated",
            "timestamp": "2026-09-01T12:00:00Z",
            "source": "twilio",
        }
        assert list(data["recordings"][0]) == [
            "sid", "status", "url", "duration", "channels", "source", "track", "start_time", "error_code",
        ]  # fmt: skip
        assert (data["recordings"][0]["duration"], data["recordings"][0]["channels"]) == (14, 2)


#: Strings shaped like Twilio's Timestamp, including out-of-range fields, two-digit-looking years
#: and other zones.
TWILIO_LIKE_TIMES = st.builds(
    "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["Mon", "Tue", "Sun"]),
    st.integers(0, 32),
    st.sampled_from(["Jan", "Feb", "Sep", "Dec"]),
    st.integers(0, 9999),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["+0000", "-0000", "+0100", "-0100", "GMT"]),
)


class TestTimestamps:
    @settings(max_examples=200, deadline=None)
    @given(TWILIO_LIKE_TIMES)
    def test_fast_path_agrees_with_parse_timestamp(self, value: str) -> None:
        """Reading Twilio's Timestamp shape quickly gives what parse_timestamp gives (or None where it
        overflows)."""
        try:
            expected = parse_timestamp(value)
        except OverflowError:
            expected = None
        assert _parse_time(value) == expected
