"""The traffic generator: what the simulator, the tests and the benchmark send."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from callstate.event import check_callback
from callstate.traffic import TERMINAL, answered_call, arrival_order, simulated_calls

START = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


class TestSimulatedCalls:
    @given(st.integers(0, 2**32 - 1), st.integers(1, 40))
    def test_count_calls_each_with_valid_callbacks(self, seed: int, count: int) -> None:
        """Exactly ``count`` calls; every callback is one the receiver accepts, about its call."""
        calls = simulated_calls(random.Random(seed), count, start=START)
        assert len(calls) == count
        assert len({call.sid for call in calls}) == count
        for call in calls:
            assert call.events
            for event in call.events:
                assert event.source == "twilio"
                check_callback(event.kind, event.params)
                assert event.call_sid == call.sid

    @given(st.integers(0, 2**32 - 1))
    def test_child_legs_name_an_answered_parent_of_the_same_run(self, seed: int) -> None:
        """``<Dial>`` legs are outbound-dial with the SID of a completed call as ParentCallSid."""
        calls = simulated_calls(random.Random(seed), 30, start=START)
        outcomes = {call.sid: call.outcome for call in calls}
        for call in calls:
            parents = {e.get("ParentCallSid") for e in call.events if e.kind == "call"}
            if call.direction == "outbound-dial":
                (parent,) = parents
                assert outcomes[str(parent)] == "completed"
            else:
                assert parents <= {None}

    def test_the_same_seed_gives_the_same_calls(self) -> None:
        first = simulated_calls(random.Random(7), 50, start=START)
        assert first == simulated_calls(random.Random(7), 50, start=START)
        assert first != simulated_calls(random.Random(8), 50, start=START)

    def test_a_run_covers_the_cases_twilio_sends(self) -> None:
        """Outcomes, directions, AMD, mono and dual recordings, every recording ending, and calls
        whose terminal callback never arrives all occur in a run of a few hundred calls."""
        calls = simulated_calls(random.Random(1), 400, start=START)
        events = [event for call in calls for event in call.events]
        assert {call.outcome for call in calls} == TERMINAL
        assert {call.direction for call in calls} == {"outbound-api", "inbound", "outbound-dial"}
        assert any(event.get("AnsweredBy") for event in events)
        recordings = [event for event in events if event.kind == "recording"]
        assert {event.get("RecordingChannels") for event in recordings} == {"1", "2"}
        assert {event.status for event in recordings} == {"in-progress", "completed", "absent", "failed"}
        assert any(not any(e.kind == "call" and e.status in TERMINAL for e in call.events) for call in calls)
        assert any(event.get("SequenceNumber") is None for event in events if event.kind == "call")


def test_answered_call_fires_the_four_progress_events_in_sequence() -> None:
    events = answered_call(random.Random(3), "CA" + "1" * 32)
    assert [(e.status, e.sequence_number) for e in events] == [
        ("initiated", 0),
        ("ringing", 1),
        ("in-progress", 2),
        ("completed", 3),
    ]
    assert events[-1].get("CallDuration") is not None


@given(st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_arrival_order_keeps_every_event_and_only_repeats_some(seed: int, duplicates: float) -> None:
    calls = simulated_calls(random.Random(seed), 20, start=START)
    histories = [call.events for call in calls]
    arrived = arrival_order(random.Random(seed), histories, 5, duplicates)
    sent = [event for events in histories for event in events]
    assert set(arrived) == set(sent)
    assert len(arrived) <= 2 * len(sent)
    if duplicates == 0:
        assert sorted(arrived, key=lambda e: e.canonical()) == sorted(sent, key=lambda e: e.canonical())
