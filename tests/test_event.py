"""Parsing a signed callback into an Event (pure)."""

from __future__ import annotations

import pytest

from callstate.errors import InvalidCallback
from callstate.event import Event, check_callback, parse_callback, wire_event

CALL = "CA" + "1" * 32
REC = "RE" + "2" * 32


class TestParseCallback:
    def test_call_event_keeps_every_parameter(self) -> None:
        """Known and unknown parameters are all kept, in canonical order."""
        event = parse_callback("call", [("Zeta", "1"), ("CallSid", CALL), ("CallStatus", "ringing")])
        assert event.params == (("CallSid", CALL), ("CallStatus", "ringing"), ("Zeta", "1"))

    @pytest.mark.parametrize(
        ("kind", "params", "field"),
        [
            ("call", [("CallStatus", "ringing")], "CallSid"),
            ("call", [("CallSid", "")], "CallSid"),
            ("call", [("CallSid", "CA12")], "CallSid"),
            ("call", [("CallSid", CALL), ("AccountSid", "AC1")], "AccountSid"),
            ("call", [("CallSid", CALL), ("ParentCallSid", "nope")], "ParentCallSid"),
            ("call", [("CallSid", CALL), ("CallSid", "CA" + "3" * 32)], "CallSid"),
            ("call", [("CallSid", CALL), ("CallStatus", "a"), ("CallStatus", "b")], "CallStatus"),
            ("recording", [("CallSid", CALL)], "RecordingSid"),
            ("recording", [("RecordingSid", "RE1")], "RecordingSid"),
        ],
    )
    def test_unusable_callbacks_name_the_field(
        self, kind: str, params: list[tuple[str, str]], field: str
    ) -> None:
        """Missing, malformed or ambiguous identifying fields are refused, naming the field."""
        with pytest.raises(InvalidCallback) as info:
            parse_callback(kind, params)  # type: ignore[arg-type]
        assert info.value.field == field

    def test_recording_without_call_is_valid(self) -> None:
        """Conference recordings carry no CallSid."""
        event = parse_callback("recording", [("RecordingSid", REC)])
        assert event.call_sid is None

    def test_delivery_metadata_is_not_part_of_the_event(self) -> None:
        """Two deliveries of one request are equal and store identically."""
        params = [("CallSid", CALL), ("CallStatus", "ringing"), ("SequenceNumber", "1")]
        first = parse_callback("call", params, received_at=1.0, idempotency_token="a")
        again = parse_callback("call", params, received_at=2.0, idempotency_token="b")
        assert first == again
        assert first.canonical() == again.canonical()
        assert first.slot() == again.slot()

    def test_wire_form_round_trips(self) -> None:
        """to_wire/from_wire keep content and delivery metadata."""
        event = parse_callback("call", [("CallSid", CALL)], received_at=5.0, idempotency_token="t")
        back = Event.from_wire(event.to_wire())
        assert back == event
        assert (back.received_at, back.idempotency_token) == (5.0, "t")

    @pytest.mark.parametrize(
        ("raw", "expected"), [("0", 0), ("17", 17), ("-1", None), ("x", None), ("٣", None)]
    )
    def test_sequence_number_parsing(self, raw: str, expected: int | None) -> None:
        """Only plain ASCII decimal sequence numbers count; anything else is absent."""
        event = Event.create("call", [("CallSid", CALL), ("SequenceNumber", raw)])
        assert event.sequence_number == expected

    def test_identity_follows_design(self) -> None:
        """(SequenceNumber, CallStatus) for calls, (RecordingSid, status) for recordings."""
        call = Event.create("call", [("CallSid", CALL), ("CallStatus", "busy"), ("SequenceNumber", "2")])
        rec = Event.create("recording", [("RecordingSid", REC), ("RecordingStatus", "absent")])
        assert call.identity() == "c:2:busy"
        assert rec.identity() == f"r:{REC}:absent"
        bare = Event.create("call", [("CallSid", CALL), ("CallStatus", "busy")])
        assert bare.identity().startswith("c:~")


class TestCheckCallback:
    def test_the_reported_fault_does_not_depend_on_parameter_order(self) -> None:
        """Of several faults, the alphabetically first field is named, in any order."""
        params = [("CallSid", CALL), ("ParentCallSid", "bad"), ("AccountSid", "bad")]
        for ordering in (params, params[::-1], params[1:] + params[:1]):
            with pytest.raises(InvalidCallback) as info:
                check_callback("call", ordering)
            assert info.value.field == "AccountSid"

    def test_an_exact_repeat_is_not_a_fault(self) -> None:
        """The same pair twice is one parameter (Twilio's signature dedupes it too)."""
        fields = check_callback("call", [("CallSid", CALL), ("CallSid", CALL)])
        assert fields["CallSid"] == CALL

    def test_wire_event_is_the_wire_form_of_the_event(self) -> None:
        """The receiver's shortcut gives what Event.to_wire would, once canonicalized."""
        params = [("CallStatus", "ringing"), ("CallSid", CALL), ("CallStatus", "ringing")]
        wire = wire_event("call", params, received_at=3.0, idempotency_token="t")
        assert Event.from_wire(wire) == parse_callback("call", params)
        assert Event.from_wire(wire).to_wire() == Event.from_wire(Event.from_wire(wire).to_wire()).to_wire()
