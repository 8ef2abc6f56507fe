"""The simulator's plan and book-keeping: signing, deliveries, expected states."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from callstate.event import Event
from callstate.simulation import Expected, Signer, Tally, expected_states, mismatch, plan, sign
from tests.twiliosign import TOKEN, MultiDict, signature
from workers.reduce import reduce

START = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
BASE = "https://calls.example.com/prefix"
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


def state(sid: str, events: Iterable[Event]) -> Mapping[str, Any]:
    return reduce(sid, events).to_dict()


@given(st.lists(st.tuples(_text, _text), max_size=8), _text)
def test_signature_is_the_official_librarys(params: list[tuple[str, str]], path: str) -> None:
    """The simulator signs independently of the receiver, exactly as twilio-python does."""
    url = BASE + "/" + path
    assert sign(TOKEN, url, params) == signature(url, params)


@given(st.lists(st.tuples(_text, _text), max_size=8), _text, _text.filter(bool))
def test_sharedkey_signature_is_the_official_librarys(
    params: list[tuple[str, str]], path: str, secret: str
) -> None:
    """Under a Webhook SharedKey the simulator signs with HMAC-SHA256 exactly as twilio-python
    computes it, and names the key and algorithm the way Twilio does."""
    url = BASE + "/" + path
    oracle = RequestValidator(secret).compute_signature(url, MultiDict.of(params), "HMAC_SHA256")
    assert sign(secret, url, params, "HMAC_SHA256") == oracle
    assert Signer(secret, "webhooks_sharedkey_1").headers(url, params) == {
        "X-Twilio-Signature": oracle,
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }


def test_a_plan_is_reproducible_from_its_seed() -> None:
    first = plan(5, 60, start=START, duplicates=0.2)
    again = plan(5, 60, start=START, duplicates=0.2)
    assert [d.event for d in first.deliveries] == [d.event for d in again.deliveries]
    assert [d.idempotency_token for d in first.deliveries] == [d.idempotency_token for d in again.deliveries]
    assert [d.event for d in plan(6, 60, start=START, duplicates=0.2).deliveries] != [
        d.event for d in first.deliveries
    ]


def test_deliveries_carry_every_callback_and_duplicates_repeat_the_same_request() -> None:
    """Each callback of each call is delivered; a duplicate is the same signed request again."""
    planned = plan(9, 200, start=START, duplicates=0.3)
    assert {d.event for d in planned.deliveries} == {e for call in planned.calls for e in call.events}
    assert planned.duplicates > 0
    requests: dict[Event, tuple[str, str, bytes, dict[str, str]]] = {}
    for delivery in planned.deliveries:
        request = delivery.request(BASE, Signer(TOKEN))
        assert requests.setdefault(delivery.event, request) == request


def test_get_callbacks_are_signed_over_the_full_url() -> None:
    """StatusCallbackMethod=GET: parameters in the query string, signature over the whole URL."""
    planned = plan(1, 200, start=START, duplicates=0)
    gets = [d for d in planned.deliveries if d.method == "GET"]
    assert gets
    method, url, body, headers = gets[0].request(BASE, Signer(TOKEN))
    assert (method, body) == ("GET", b"")
    assert headers["X-Twilio-Signature"] == signature(url)
    assert sorted(parse_qsl(urlsplit(url).query, keep_blank_values=True)) == sorted(gets[0].event.params)


class TestExpectedStates:
    def _one_call(self) -> tuple[Any, list[Event]]:
        planned = plan(2, 40, start=START, duplicates=0)
        call = next(c for c in planned.calls if len(c.events) >= 3)
        return call, list(call.events)

    def test_every_callback_acknowledged_allows_exactly_the_reduced_state(self) -> None:
        call, events = self._one_call()
        tally = Tally(acknowledged=set(events))
        (expected,) = expected_states([call], tally, state)
        assert mismatch(expected, dict(state(call.sid, events))) is None
        assert mismatch(expected, dict(state(call.sid, events[:-1]))) is not None
        assert mismatch(expected, None) == "not stored (404), but callbacks were acknowledged"

    def test_an_unanswered_callback_may_or_may_not_be_stored(self) -> None:
        """A timeout or 503 may have stored the callback anyway: both states are accepted."""
        call, events = self._one_call()
        tally = Tally(acknowledged=set(events[:-1]), uncertain={events[-1]})
        (expected,) = expected_states([call], tally, state)
        assert mismatch(expected, dict(state(call.sid, events))) is None
        assert mismatch(expected, dict(state(call.sid, events[:-1]))) is None

    def test_a_refused_callback_must_not_be_stored(self) -> None:
        """A 4xx stores nothing: a state that shows the refused callback is a mismatch."""
        call, events = self._one_call()
        tally = Tally(acknowledged=set(events[:-1]))  # the last one got a 403: not uncertain
        (expected,) = expected_states([call], tally, state)
        assert mismatch(expected, dict(state(call.sid, events))) is not None
        (nothing,) = expected_states([call], Tally(), state)
        assert mismatch(nothing, None) is None
        assert mismatch(nothing, dict(state(call.sid, events))) == "stored, but no callback was acknowledged"

    def test_an_acknowledged_terminal_callback_fixes_the_status(self) -> None:
        """Independently of the reducer: the generator's outcome is the status once acknowledged."""
        planned = plan(3, 40, start=START, duplicates=0)
        call = next(c for c in planned.calls if any(e.get("CallDuration") for e in c.events))
        expected = Expected(call, (None,), call.outcome)
        wrong = dict(state(call.sid, call.events)) | {"status": "ringing"}
        assert mismatch(expected, wrong) == (
            f"status 'ringing', but its {call.outcome!r} callback was acknowledged"
        )

    def test_tally_counts_attempts_and_final_answers(self) -> None:
        planned = plan(4, 3, start=START, duplicates=0)
        first, second, *_ = planned.deliveries
        tally = Tally()
        for answer in ("503", "204"):
            tally.answer(answer, 0.01)
        tally.done(first, "204")
        tally.answer("403", 0.2)
        tally.done(second, "403")
        assert tally.answers == {"503": 1, "204": 1, "403": 1}
        assert tally.acknowledged == {first.event}
        assert tally.refused() == {"403": 1}
        assert tally.uncertain == set()
        assert tally.slowest == 0.2
