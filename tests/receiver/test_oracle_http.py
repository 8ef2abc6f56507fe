"""The callback endpoints over HTTP against the official ``twilio`` package as an oracle (issue 2).

Hypothesis builds parameter sets (unicode up to non-BMP, ``+ & = %``, empty values, repeated names,
a query string on the configured URL), ``twilio.request_validator.RequestValidator`` signs them, and the
app (in-process, real Redis) must answer 204 and queue exactly those parameters; the same request with
one thing changed (a value, a parameter added or removed, the path, the query, the scheme or host, the
token) must be a 403 that stores nothing. Nothing here uses callstate's signature code.

The examples are deterministic in ``make test``; ``CALLSTATE_FUZZ_EXAMPLES=N`` (``make fuzz``) raises
their number and lets hypothesis explore at random, with its example database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, cast
from urllib.parse import quote, quote_plus, urlencode

import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from callstate import keys
from callstate.event import Event
from callstate.settings import Settings
from receiver.app import create_app
from tests.queued import queued_events
from tests.redisserver import RedisServer
from tests.twiliosign import TOKEN, MultiDict

_EXTRA_EXAMPLES = int(os.environ.get("CALLSTATE_FUZZ_EXAMPLES") or 0)
settings.register_profile(
    "callstate-oracle",
    max_examples=max(100, _EXTRA_EXAMPLES),
    deadline=None,
    # One TestClient (module fixture) and a per-test Redis serve every example; each example
    # starts from an empty database. A busy CI machine is not a slow strategy (tests/conftest.py).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # make test: the same examples every run, nothing written to .hypothesis/; make fuzz: explore.
    derandomize=not _EXTRA_EXAMPLES,
    **({} if _EXTRA_EXAMPLES else {"database": None}),
)
ORACLE: Final = settings.get_profile("callstate-oracle")

ORIGIN: Final = "http://testserver"  # what TestClient sends as scheme and Host
PATHS: Final = {"call": "/twilio/call-status", "recording": "/twilio/recording-status"}
Kind = Literal["call", "recording"]
Method = Literal["POST", "GET"]

#: What must look like a SID whenever present (docs/contracts.md, "Callback answers": otherwise 400).
SID_PATTERNS: Final = {
    "CallSid": re.compile(r"CA[0-9a-fA-F]{32}"),
    "ParentCallSid": re.compile(r"CA[0-9a-fA-F]{32}"),
    "AccountSid": re.compile(r"AC[0-9a-fA-F]{32}"),
    "RecordingSid": re.compile(r"RE[0-9a-fA-F]{32}"),
}
#: Names whose second, different value makes a signed callback a 400.
SINGLE_VALUED: Final = (*SID_PATTERNS, "CallStatus", "SequenceNumber", "RecordingStatus")

# -- the oracle ------------------------------------------------------------------------------


def oracle_sign(url: str, pairs: list[tuple[str, str]], token: str = TOKEN) -> str:
    """X-Twilio-Signature as twilio computes it for ``url`` and POST ``pairs`` (none for a GET)."""
    signature: str = RequestValidator(token).compute_signature(url, MultiDict.of(pairs))
    return signature


def oracle_accepts(url: str, pairs: list[tuple[str, str]], signature: str) -> bool:
    """The official validator's verdict under the app's token (it tries both port forms)."""
    verdict: bool = RequestValidator(TOKEN).validate(url, MultiDict.of(pairs), signature)
    return verdict


# -- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """One callback as Twilio would send it, and what its signature was computed over.

    ``query`` is the query string configured on the callback URL and ``query_pairs`` its decoded
    pairs; ``params`` are Twilio's parameters (the form body of a POST, appended to the query of a
    GET: docs/twilio.md, "GET requests"). The ``signed_*`` fields and ``token``, when set, are what
    the signature covers instead of what is sent: a tampered request.
    """

    method: Method
    kind: Kind
    query: str
    query_pairs: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, str], ...]
    body_quote: str = "plus"
    signed_origin: str = ORIGIN
    signed_path: str | None = None
    signed_query: str | None = None
    signed_params: tuple[tuple[str, str], ...] | None = None
    token: str = TOKEN

    def _url(self, origin: str, path: str, query: str, params: tuple[tuple[str, str], ...]) -> str:
        url = origin + path + ("?" + query if query else "")
        if self.method == "GET":
            url += ("&" if query else "?") + urlencode(params)
        return url

    def url(self) -> str:
        """The URL requested (with Twilio's parameters appended for a GET)."""
        return self._url(ORIGIN, PATHS[self.kind], self.query, self.params)

    def _form(self, params: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        return list(params) if self.method == "POST" else []

    def signature(self) -> str:
        params = self.params if self.signed_params is None else self.signed_params
        url = self._url(
            self.signed_origin,
            PATHS[self.kind] if self.signed_path is None else self.signed_path,
            self.query if self.signed_query is None else self.signed_query,
            params,
        )
        return oracle_sign(url, self._form(params), self.token)

    def oracle_accepts(self) -> bool:
        """Whether twilio's validator accepts what is sent, with the signature sent."""
        return oracle_accepts(self.url(), self._form(self.params), self.signature())

    def send(self, client: TestClient) -> Any:
        headers = {"x-twilio-signature": self.signature()}
        if self.method == "GET":
            return client.get(self.url(), headers=headers)
        quote_via = quote_plus if self.body_quote == "plus" else quote
        headers["content-type"] = "application/x-www-form-urlencoded"
        body = urlencode(self.params, quote_via=quote_via).encode()
        return client.post(self.url(), content=body, headers=headers)

    def expected_params(self) -> list[tuple[str, str]]:
        """What the queued event must hold: every decoded parameter, sorted, exact repeats dropped."""
        pairs = list(self.params) + (list(self.query_pairs) if self.method == "GET" else [])
        return sorted(set(pairs))


# Text that exercises the encoding: separators, '+', '%', NUL, non-ASCII and non-BMP characters.
TEXT: Final = st.text(
    st.one_of(st.sampled_from(list("+&=%# ?/;\x00é€😀𝄞")), st.characters(codec="utf-8")),
    max_size=10,
)
#: Names other than the ones that must be valid SIDs or single-valued; a small pool makes repeats.
NAMES: Final = st.one_of(
    st.sampled_from(["Digits", "To", "From", "Called", "x", "", "callsid", "CallSid "]), TEXT
).filter(lambda name: name not in SINGLE_VALUED)


def sids(prefix: str) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789abcdefABCDEF"), min_size=32, max_size=32).map(
        lambda digits: prefix + digits
    )


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A query string configured on the callback URL (``?tenant=a``), and its decoded pairs.

    Encoded as ``urlencode`` does, with ``quote`` or ``quote_plus``, optionally leaving URL
    punctuation unescaped, and with an optional bare name (``?flag``, decoded as ``("flag", "")``).
    """
    pairs = draw(st.lists(st.tuples(NAMES, TEXT), max_size=3))
    quote_via = draw(st.sampled_from([quote, quote_plus]))
    safe = draw(st.sampled_from(["", "/?:@!$'()*,;"]))
    parts = [urlencode([pair], safe=safe, quote_via=quote_via) for pair in pairs]
    for name in draw(st.lists(NAMES.filter(bool), max_size=1)):
        parts.append(quote(name, safe=""))
        pairs.append((name, ""))
    return "&".join(parts), tuple(pairs)


@st.composite
def twilio_params(draw: st.DrawFn, kind: Kind) -> list[tuple[str, str]]:
    """Parameters of a usable callback: valid SIDs, no single-valued name twice with two values,
    anything else (unknown names, repeated names, empty and strange values) in any order."""
    params: list[tuple[str, str]] = []
    if kind == "call" or draw(st.booleans()):
        params.append(("CallSid", draw(sids("CA"))))
    if kind == "recording":
        params.append(("RecordingSid", draw(sids("RE"))))
    optional = [("AccountSid", sids("AC")), ("ParentCallSid", sids("CA"))]
    if kind == "call":
        optional += [("CallStatus", TEXT), ("SequenceNumber", TEXT)]
    else:
        optional.append(("RecordingStatus", TEXT))
    for name, values in optional:
        if draw(st.booleans()):
            params.append((name, draw(values)))
    params += draw(st.lists(st.tuples(NAMES, TEXT), max_size=6))
    # Exact repeats of any pair (single-valued ones included) are one parameter to everyone.
    params += draw(st.lists(st.sampled_from(params), max_size=2))
    shuffled: list[tuple[str, str]] = draw(st.permutations(params))
    return shuffled


@st.composite
def callbacks(draw: st.DrawFn, method: Method) -> Callback:
    kind: Kind = draw(st.sampled_from(["call", "recording"]))
    query, query_pairs = draw(queries())
    return Callback(
        method=method,
        kind=kind,
        query=query,
        query_pairs=query_pairs,
        params=tuple(draw(twilio_params(kind))),
        body_quote=draw(st.sampled_from(["plus", "percent"])),
    )


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[TestClient]:
    """One started app for every example of the module (a lifespan per example is slow)."""
    app = create_app(Settings(redis_url=redis_server.url, auth_token=TOKEN))
    with TestClient(app) as client:
        yield client


def stored_keys(client: redis.Redis) -> list[bytes]:
    """Every key but the deployment's counters, which count refusals too (README, "Monitoring")."""
    return sorted(key for key in cast(list[bytes], client.keys("*")) if key != keys.METRICS.encode())


def assert_accepted(response: Any, callback: Callback, redis_client: redis.Redis) -> None:
    assert response.status_code == 204, response.text
    [event] = queued_events(redis_client)
    assert event["kind"] == callback.kind
    # The queue carries what was received; the event the workers store is its canonical form.
    assert list(Event.from_wire(event).params) == callback.expected_params()


def assert_refused_403(response: Any, redis_client: redis.Redis) -> None:
    assert response.status_code == 403, response.text
    assert response.text == "signature does not match"
    assert stored_keys(redis_client) == []


# -- properties ------------------------------------------------------------------------------

METHODS: Final = pytest.mark.parametrize("method", ["POST", "GET"])


@METHODS
@ORACLE
@given(data=st.data())
def test_twilio_signed_callbacks_are_accepted(
    client: TestClient, redis_client: redis.Redis, method: Method, data: st.DataObject
) -> None:
    """Whatever twilio signs (POST form or GET URL) is 204, and the queued event holds exactly the
    decoded parameters."""
    redis_client.flushall()
    callback = data.draw(callbacks(method))
    assert callback.oracle_accepts()
    assert_accepted(callback.send(client), callback, redis_client)


@st.composite
def tampered(draw: st.DrawFn, callback: Callback) -> Callback:
    """``callback`` with exactly one thing changed after it was signed (or signed differently)."""
    params = list(callback.params)
    change = draw(st.sampled_from(["value", "add", "remove", "path", "query", "origin", "token"]))
    if change == "value":
        index = draw(st.integers(0, len(params) - 1))
        name, value = params[index]
        params[index] = (name, draw(TEXT.filter(lambda new: new != value)))
    elif change == "add":
        name = draw(st.one_of(NAMES, st.sampled_from(SINGLE_VALUED)))
        params.insert(draw(st.integers(0, len(params))), (name, draw(TEXT)))
    elif change == "remove":
        del params[draw(st.integers(0, len(params) - 1))]
    elif change == "path":
        path = PATHS[callback.kind]
        other = PATHS["recording" if callback.kind == "call" else "call"]
        signed = [other, path + "/", path.upper(), "/prefix" + path, path.replace("-", "%2D"), path[:-1]]
        return replace(callback, signed_path=draw(st.sampled_from(signed)))
    elif change == "query":
        signed_query, _ = draw(queries())
        assume(signed_query != callback.query)
        return replace(callback, signed_query=signed_query)
    elif change == "origin":
        origins = [
            "https://testserver",
            "http://example.com",
            "http://testserver:8080",
            "https://testserver:80",
            "http://testserver.",
            "http://user@testserver.example",
        ]
        return replace(callback, signed_origin=draw(st.sampled_from(origins)))
    else:
        token = draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40))
        assume(token != TOKEN)
        return replace(callback, token=token)
    # The signature covers the original parameters; the changed ones are sent.
    return replace(callback, params=tuple(params), signed_params=callback.params)


@METHODS
@ORACLE
@given(data=st.data())
def test_one_change_after_signing_is_403_and_stores_nothing(
    client: TestClient, redis_client: redis.Redis, method: Method, data: st.DataObject
) -> None:
    """One value changed, a parameter added or removed, another path, query, scheme or host signed,
    or another token: 403, nothing stored; the untouched request is then accepted."""
    redis_client.flushall()
    callback = data.draw(callbacks(method))
    changed = data.draw(tampered(callback))
    # Twilio's string to sign has no delimiters ("ab"+"" reads as "a"+"b"), and removing one of two
    # identical pairs changes nothing: only changes that twilio's own validator refuses count.
    assume(not changed.oracle_accepts())
    assert_refused_403(changed.send(client), redis_client)
    assert_accepted(callback.send(client), callback, redis_client)


@st.composite
def unusable(draw: st.DrawFn, method: Method) -> tuple[Callback, str]:
    """A callback that twilio signs correctly but that names a malformed SID or repeats a
    single-valued parameter with two values, and the name of that parameter."""
    callback = draw(callbacks(method))
    params = list(callback.params)
    # Every one of them counts on both endpoints.
    field = draw(st.sampled_from(SINGLE_VALUED))
    params = [(name, value) for name, value in params if name != field]
    pattern = SID_PATTERNS.get(field)
    if pattern is not None and draw(st.booleans()):
        prefix = pattern.pattern[:2]
        near_misses = st.sampled_from(
            [
                prefix + "0" * 31,
                prefix + "0" * 33,
                prefix.lower() + "0" * 32,
                prefix + "g" * 32,
                prefix + "0" * 31 + "\n",
                " " + prefix + "0" * 32,
                "XX" + "0" * 32,
            ]
        )
        # An empty SID is "missing" (and named) where it is required, and simply absent elsewhere.
        required = field == ("CallSid" if callback.kind == "call" else "RecordingSid")
        others = TEXT.filter(lambda value: bool(required or value) and not pattern.fullmatch(value))
        params.insert(draw(st.integers(0, len(params))), (field, draw(st.one_of(near_misses, others))))
    else:
        values = TEXT if pattern is None else sids(pattern.pattern[:2])
        first, second = draw(st.lists(values, min_size=2, max_size=2, unique=True))
        params.insert(draw(st.integers(0, len(params))), (field, first))
        params.insert(draw(st.integers(0, len(params))), (field, second))
    return replace(callback, params=tuple(params)), field


@METHODS
@ORACLE
@given(data=st.data())
def test_signed_callback_with_a_malformed_or_repeated_field_is_400_naming_it(
    client: TestClient, redis_client: redis.Redis, method: Method, data: st.DataObject
) -> None:
    """Correctly signed but unusable (a malformed SID, or CallSid, CallStatus, SequenceNumber,
    RecordingStatus... with two values): 400 whose reason names the field, nothing stored."""
    redis_client.flushall()
    callback, field = data.draw(unusable(method))
    assert callback.oracle_accepts()
    response = callback.send(client)
    assert response.status_code == 400, response.text
    assert field in response.text
    assert stored_keys(redis_client) == []
