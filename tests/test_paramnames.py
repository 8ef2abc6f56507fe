"""Re-splits recognised without I/O (callstate.paramnames, Event.slot, Event.preference)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstate.errors import InvalidCallback
from callstate.event import Event, parse_callback
from callstate.paramnames import KNOWN, cut_short, genuineness, signed_concatenation
from tests.histories import call_histories
from tests.resplits import resplits
from tests.twiliosign import call_params, call_sid

SID = call_sid(0xC0FFEE)


def known(params: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """The pairs of ``params`` with a known Twilio name: all that reduction reads."""
    return {(name, value) for name, value in params if name in KNOWN}


class TestCutShort:
    @pytest.mark.parametrize(
        ("name", "value", "whole"),
        [
            ("CallDuratio", "n42", "CallDuration"),
            ("SipResponseCod", "e200", "SipResponseCode"),
            ("From", "CityOAKLAND", "FromCity"),
            ("SequenceNumbe", "r3", "SequenceNumber"),
        ],
    )
    def test_a_known_name_cut_short_is_found(self, name: str, value: str, whole: str) -> None:
        """The rest of the name at the start of the value gives the known name away."""
        assert cut_short(name, value) == whole

    @pytest.mark.parametrize(
        ("name", "value"),
        [("From", "+15558675310"), ("CallDuratio", "42"), ("Unknown", "x"), ("To", "")],
    )
    def test_anything_else_passes(self, name: str, value: str) -> None:
        """A prefix of a known name with any other value, a name that is a whole known name whose
        value does not start a longer one, unknown names: not re-splits."""
        assert cut_short(name, value) is None

    def test_the_receiver_check_refuses_the_issue_examples(self) -> None:
        """parse_callback refuses CallDuratio=n42 naming the field, a 400 at the receiver."""
        params = [*call_params(SID, "completed", 3), ("CallDuratio", "n42")]
        with pytest.raises(InvalidCallback, match=r"CallDuratio is a re-split of CallDuration"):
            parse_callback("call", params)

    @settings(max_examples=50, deadline=None)
    @given(call_histories())
    def test_genuine_callbacks_are_never_refused(self, history: tuple[str, list[Event]]) -> None:
        """No parameter of a realistic callback looks cut short."""
        _, events = history
        for event in events:
            assert all(cut_short(name, value) is None for name, value in event.params)


class TestPreference:
    @settings(max_examples=12, deadline=None)
    @given(call_histories(), st.data())
    def test_twilios_split_is_preferred_to_every_resplit(
        self, history: tuple[str, list[Event]], data: st.DataObject
    ) -> None:
        """Every single- and double-boundary re-split of a realistic callback has the callback's
        slot, so it cannot add an event, and a lower preference, so it cannot replace Twilio's;
        except a re-split inside an unknown parameter (``SomeFuturePar=amx``), which nothing tells
        apart from Twilio's and which changes no known parameter, hence no state."""
        _, events = history
        event = data.draw(st.sampled_from([e for e in events if e.source == "twilio"] or events))
        variants = resplits(event.params)
        assert variants
        for variant in variants:
            split = Event.create(event.kind, variant, source=event.source)
            assert signed_concatenation(variant) == signed_concatenation(event.params)
            assert split.slot() == event.slot()
            if split.preference() >= event.preference():
                assert known(variant) == known(event.params), variant

    def test_the_issue_examples_rank_below_the_genuine_callback(self) -> None:
        """CallDuratio=n42 and a From glued to its FromCity share the genuine slot, ranked lower."""
        genuine = Event.create(
            "call", [*call_params(SID, "completed", 3), ("CallDuration", "42"), ("FromCity", "OAKLAND")]
        )
        swaps = [
            ([("CallDuration", "42")], [("CallDuratio", "n42")]),
            ([("From", "+15005550001"), ("FromCity", "OAKLAND")], [("From", "+15005550001FromCityOAKLAND")]),
        ]
        for removed, added in swaps:
            variant = [pair for pair in genuine.params if pair not in removed] + added
            split = Event.create("call", variant)
            assert split.slot() == genuine.slot()
            assert split.preference() < genuine.preference()

    def test_genuineness_counts_shapes_repeats_and_pairs(self) -> None:
        """Known names with their value's shape, unknown Twilio-like names, minus pairs."""
        assert genuineness([("CallSid", SID), ("SequenceNumber", "3")]) == (2, 0, -2)
        assert genuineness([("CallSid", SID), ("SequenceNumber", "3x")]) == (1, 0, -2)
        assert genuineness([("From", "+1555"), ("From", "City")]) == (0, 0, -2)
        assert genuineness([("FutureParam", "x"), ("lowercase", "y")]) == (0, 1, -2)
