"""The plan and the book-keeping of ``callstate simulate``, without I/O.

:func:`plan` turns a seed into calls (:func:`callstate.traffic.simulated_calls`) and the deliveries
that carry their callbacks: out of order, interleaved, a share of them delivered twice, each signed
the way Twilio signs (:class:`Signer`). :class:`Tally` records what the target answered, and
:func:`expected_states` says what the store must then hold for each call, from what the simulator
knows it sent and what was acknowledged. The sender and the verifier (:mod:`callstate.simulator`)
are a thin shell around these.

The expected state is computed by the product's pure reducer, passed in as ``reduce`` (so this
module does not import the worker package): the reducer's own rules (order and duplicates do not
matter, terminal states never regress) are property-tested apart; what a simulation checks is
everything around it (public URL and proxy, tokens, queue, workers, store, read API). On top of
that, :func:`mismatch` checks the one fact the generator knows independently of any reducer: a
call whose terminal callback was acknowledged has that outcome as its status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode

from callstate.event import Event
from callstate.traffic import PATHS, TERMINAL, CallHistory, arrival_order, simulated_calls

#: Calls whose every callback was acknowledged are compared exactly. A callback that never got a
#: 2xx may still have been stored (its answer was lost, not its request), so a call with such
#: callbacks matches any subset of them: up to this many, 2**N candidate states are tried.
MAX_UNCERTAIN: Final = 8

#: Calls a callback may be delayed by (calls begin about as often as callbacks are sent).
_WINDOW: Final = 50

Reduce = Callable[[str, Iterable[Event]], Mapping[str, Any]]
"""The product's reducer: a call SID and its events -> the state's JSON object."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One HTTP request as Twilio would send it (a duplicate is the same request again)."""

    call_sid: str
    event: Event
    method: str
    #: Twilio's ``I-Twilio-Idempotency-Token``: one per request, the same on its retries.
    idempotency_token: str

    @property
    def path(self) -> str:
        return PATHS[self.event.kind]

    def request(self, base_url: str, signer: Signer) -> tuple[str, str, bytes, dict[str, str]]:
        """Method, URL, body and headers, signed by ``signer`` for ``base_url`` + path."""
        url = base_url + self.path
        headers = {"I-Twilio-Idempotency-Token": self.idempotency_token, "User-Agent": "TwilioProxy/1.1"}
        if self.method == "GET":
            # Parameters in the query string; the signature covers the whole URL (no body part).
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(self.event.params)}"
            headers |= signer.headers(url, ())
            return "GET", url, b"", headers
        headers |= signer.headers(url, self.event.params)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return "POST", url, urlencode(self.event.params).encode(), headers


@dataclass(frozen=True, slots=True)
class Plan:
    calls: tuple[CallHistory, ...]
    deliveries: tuple[Delivery, ...]

    @property
    def duplicates(self) -> int:
        return len(self.deliveries) - len({id(d) for d in self.deliveries})


#: The algorithms Twilio signs with: HMAC-SHA1 under the auth token, or HMAC-SHA256 under a Webhook
#: SharedKey (docs/twilio.md, "SharedKey signatures").
_DIGESTS: Final = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def sign(secret: str, url: str, params: Sequence[tuple[str, str]], algorithm: str = "HMAC_SHA1") -> str:
    """``X-Twilio-Signature``: base64 HMAC of the URL followed by each parameter name and value,
    names sorted, a repeated name's values sorted (docs/twilio.md, "The signature algorithm"), under
    ``secret`` with ``algorithm`` (``HMAC_SHA1`` or ``HMAC_SHA256``). Written here, not taken from
    the receiver, so that the simulator is a second, independent implementation (tests compare it
    with the official library)."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    message = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    mac = hmac.new(secret.encode(), message.encode(), _DIGESTS[algorithm])
    return base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True, slots=True)
class Signer:
    """How the simulator signs, as Twilio would: with the auth token (HMAC-SHA1, the default), or,
    given ``shared_key_id``, with that Webhook SharedKey's ``secret`` (HMAC-SHA256, named by
    ``X-Twilio-Webhooks-Signature-Settings``)."""

    secret: str
    shared_key_id: str | None = field(default=None)

    def headers(self, url: str, params: Sequence[tuple[str, str]]) -> dict[str, str]:
        """The signature headers of a request to ``url`` carrying ``params`` in its body."""
        if self.shared_key_id is None:
            return {"X-Twilio-Signature": sign(self.secret, url, params)}
        return {
            "X-Twilio-Signature": sign(self.secret, url, params, "HMAC_SHA256"),
            "X-Twilio-Webhooks-Signature-Settings": f"key={self.shared_key_id},algorithm=HMAC_SHA256",
        }


def plan(seed: int, calls: int, *, start: datetime, duplicates: float, account: str | None = None) -> Plan:
    """The calls and deliveries of a simulation: the same for the same arguments.

    One call in ten uses ``StatusCallbackMethod=GET``; a ``duplicates`` share of the callbacks is
    delivered a second time, later (the same request: same token, same signature).
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible traffic from a seed, nothing secret
    histories = simulated_calls(rng, calls, start=start, account=account)
    methods = {call.sid: "GET" if rng.random() < 0.1 else "POST" for call in histories}
    requests: dict[Event, Delivery] = {}
    for call in histories:
        for event in call.events:
            token = f"{rng.getrandbits(128):032x}"
            requests[event] = Delivery(call.sid, event, methods[call.sid], token)
    order = arrival_order(rng, [call.events for call in histories], _WINDOW, duplicates)
    return Plan(tuple(histories), tuple(requests[event] for event in order))


@dataclass
class Tally:
    """What the target answered: per attempt by status, and which requests got a 2xx."""

    #: Answer per attempt: an HTTP status code as text, or the name of the transport error.
    answers: Counter[str] = field(default_factory=Counter)
    #: Requests answered 2xx at least once (by identity of their event).
    acknowledged: set[Event] = field(default_factory=set)
    #: Requests whose every attempt failed: (delivery, last answer).
    failed: list[tuple[Delivery, str]] = field(default_factory=list)
    #: Requests that failed in a way that may still have stored them: a transport error, a timeout
    #: or a 5xx (the answer may be lost, or the write may land after a timeout). A 4xx stores nothing.
    uncertain: set[Event] = field(default_factory=set)
    #: The longest any attempt waited for its answer, seconds.
    slowest: float = 0.0

    def answer(self, answer: str, seconds: float) -> None:
        self.answers[answer] += 1
        self.slowest = max(self.slowest, seconds)

    def done(self, delivery: Delivery, last: str) -> None:
        if last.isdigit() and last.startswith("2"):
            self.acknowledged.add(delivery.event)
        else:
            self.failed.append((delivery, last))
            if not last.startswith("4"):
                self.uncertain.add(delivery.event)

    def refused(self) -> Counter[str]:
        """Final answers other than 2xx, by answer (a 403 is never success)."""
        return Counter(last for _, last in self.failed)


@dataclass(frozen=True, slots=True)
class Expected:
    """What one call's stored state may be: one of ``candidates`` (``None``: no state at all)."""

    call: CallHistory
    candidates: tuple[Mapping[str, Any] | None, ...]
    #: The outcome the state must show, when its terminal callback was acknowledged.
    outcome: str | None


def expected_states(calls: Iterable[CallHistory], tally: Tally, reduce: Reduce) -> list[Expected]:
    """Per call, the states the store may hold after ``tally``: the reduction of the acknowledged
    callbacks plus any subset of the :attr:`Tally.uncertain` ones (callbacks refused with a 4xx, or
    never sent, must not be there). Calls with more than :data:`MAX_UNCERTAIN` uncertain callbacks
    get no candidates (they cannot be checked)."""
    out = []
    for call in calls:
        acked = [e for e in call.events if e in tally.acknowledged]
        uncertain = [e for e in call.events if e in tally.uncertain and e not in tally.acknowledged]
        candidates: list[Mapping[str, Any] | None] = []
        if len(uncertain) <= MAX_UNCERTAIN:
            for size in range(len(uncertain) + 1):
                for extra in itertools.combinations(uncertain, size):
                    events = acked + list(extra)
                    candidates.append(reduce(call.sid, events) if events else None)
        terminal_acked = any(e.kind == "call" and e.status in TERMINAL for e in acked)
        out.append(Expected(call, tuple(candidates), call.outcome if terminal_acked else None))
    return out


def mismatch(expected: Expected, state: Mapping[str, Any] | None) -> str | None:
    """``None`` if ``state`` (the stored JSON, ``None`` when the read API answered 404) is what
    ``expected`` allows; else a short reason naming what differs."""
    if not expected.candidates:
        return None
    if state is None:
        return None if None in expected.candidates else "not stored (404), but callbacks were acknowledged"
    if expected.outcome is not None and state.get("status") != expected.outcome:
        return f"status {state.get('status')!r}, but its {expected.outcome!r} callback was acknowledged"
    if state in expected.candidates:
        return None
    nearest = expected.candidates[0]
    if nearest is None:
        return "stored, but no callback was acknowledged"
    differing = sorted(name for name in {*state, *nearest} if state.get(name) != nearest.get(name))
    return "differs in " + ", ".join(differing)
