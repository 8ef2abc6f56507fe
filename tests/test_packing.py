"""callstate.packing: the packed form of an event gives back the same event, and is small."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstate.event import KINDS, Event, Kind
from callstate.packing import NAMES, WORDS, PackingError, pack, unpack
from callstate.traffic import make_history
from tests.histories import call_histories

#: Parameter values that exercise each shortcut and the text fallback next to it.
_VALUES = st.one_of(
    st.text(),
    st.sampled_from(WORDS),
    st.sampled_from(["", "0", "00", "007", "42", "+14155551212", "+0123", "+", "1" * 19, "-1"]),
    st.from_regex(r"(CA|AC|RE|PN)[0-9a-fA-F]{32}", fullmatch=True),
    st.integers(0, 253_402_300_799).map(lambda s: format_datetime(datetime.fromtimestamp(s, UTC))),
    st.sampled_from(["Tue, 01 Sep 2026 12:00:00 +0000", "Wed, 01 Sep 2026 12:00:00 +0000",
                     "Tue, 31 Feb 2026 12:00:00 +0000", "Tue, 01 Sep 2026 24:00:00 +0000",
                     "Tue, 01 Sep 2026 12:00:00 -0000", "Thu, 01 Jan 1970 00:00:00 +0000",
                     "Tue, 01 Sep 0000 12:00:00 +0000", "Wed, 31 Dec 1969 23:59:59 +0000"]),
    st.text(alphabet="\ud800\udfff\x00é", max_size=3),
)  # fmt: skip
_NAMES = st.one_of(st.sampled_from(NAMES), st.text())


@st.composite
def any_events(draw: st.DrawFn) -> Event:
    """Any event: known and unknown names, repeated names, any source, values of every shape."""
    params = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
    if draw(st.booleans()):
        account = draw(st.from_regex(r"AC[0-9a-f]{32}", fullmatch=True))
        recording = draw(st.from_regex(r"RE[0-9a-f]{32}", fullmatch=True))
        params += [("AccountSid", account), ("RecordingSid", recording)]
        url = f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{recording}"
        params.append((draw(st.sampled_from(["RecordingUrl", "Zzz", "Another"])), url))
    kind: Kind = draw(st.sampled_from(KINDS))
    source = draw(st.sampled_from(["twilio", "rest", "", "simulated"]))
    tenant = draw(st.one_of(st.none(), st.from_regex(r"AC[0-9a-f]{32}", fullmatch=True)))
    return Event.create(kind, params, source=source, tenant=tenant)


class TestRoundTrip:
    @given(any_events())
    def test_any_event_comes_back_equal(self, event: Event) -> None:
        """unpack(pack(e)) == e for any kind, source, tenant, names and values, lone surrogates too."""
        assert unpack(pack(event)) == event

    @given(call_histories())
    def test_realistic_histories_come_back_equal(self, history: tuple[str, list[Event]]) -> None:
        """Every event of a realistic call history survives packing unchanged."""
        for event in history[1]:
            assert unpack(pack(event)) == event

    def test_packing_is_a_function_of_the_content(self) -> None:
        """Two deliveries of one request pack to the same bytes (delivery metadata is not packed)."""
        [event, *_] = make_history(random.Random(1), "CA" + "1" * 32)
        redelivered = Event.create(
            event.kind, event.params, source=event.source, received_at=1.0, idempotency_token="t"
        )
        assert pack(redelivered) == pack(event)

    def test_uppercase_hex_sids_are_kept_as_written(self) -> None:
        """A SID in uppercase hex is not folded to lowercase: it is stored as text."""
        event = Event.create("call", [("CallSid", "CA" + "AB" * 16)])
        assert unpack(pack(event)).get("CallSid") == "CA" + "AB" * 16


class TestSize:
    def test_realistic_events_pack_to_under_a_quarter_of_their_json(self) -> None:
        """Over 500 realistic histories, packed bytes are under 25% of the canonical JSON's."""
        rng = random.Random(5)
        events = [e for n in range(500) for e in make_history(rng, f"CA{n:032x}")]
        packed = sum(len(pack(event)) for event in events)
        json = sum(len(event.canonical()) for event in events)
        assert packed < 0.25 * json

    def test_a_twilio_timestamp_takes_a_few_bytes(self) -> None:
        """Timestamp as Twilio writes it: name byte, tag byte and a varint of Unix seconds."""
        bare = len(pack(Event.create("call", [])))
        event = Event.create("call", [("Timestamp", "Tue, 01 Sep 2026 12:00:00 +0000")])
        assert len(pack(event)) - bare == 2 + 5


class TestCorruption:
    @pytest.mark.parametrize(
        "data",
        [b"", b"\x02\x00\x00", b"\x01\x00\x01", b"\x01\x00\x01\x05\x09", b"\x01\x00\x01\x05\x00\x05ab",
         b"\x01\x00\x00trailing", b"\x01\x00\x01\x05\x06\x03"],
    )  # fmt: skip
    def test_bytes_pack_did_not_make_are_refused(self, data: bytes) -> None:
        """Truncated, unknown-format, unknown-tag or trailing bytes raise PackingError, never return."""
        with pytest.raises(PackingError):
            unpack(data)


def test_the_reader_skips_exactly_the_preference_the_codec_writes() -> None:
    """callstate.reader (the web process may not import workers) and workers.codec agree on the
    stored value's layout: preference bytes, then the packed event."""
    from callstate.reader import PREFERENCE  # noqa: PLC0415
    from workers import codec  # noqa: PLC0415

    [event, *_] = make_history(random.Random(2), "CA" + "2" * 32)
    assert PREFERENCE == codec.PREFERENCE_WIDTH
    assert unpack(codec.encode(event)[PREFERENCE:]) == event
