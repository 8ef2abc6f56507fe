"""Bad input never hurts (issue 5, item 4): the callback endpoints and the read API under fuzzing.

The web app runs in-process (Starlette's TestClient) against the session's real redis-server, with a
reconciled final call already in the store. Three promises are checked:

* every answer to garbage (arbitrary bytes, invalid UTF-8, broken percent escapes, huge and empty
  bodies, streamed bodies, wrong methods and content types, oversized and garbage headers, garbage
  tokens, path and query parameters) is a 4xx with a short plain-text reason; never a 500, never a
  503 (Redis is up), never a hang;
* a request without a valid signature stores nothing: every key in Redis is byte-identical after it;
* a correctly signed but strange callback (signed by the official ``twilio`` package) is 204 or 400,
  and once its queued events are applied by the real store, a call that was final stays final with
  the same status, and the read API still serves it.

``make test`` runs a bounded, deterministic set of examples (a few seconds); ``make fuzz`` sets
``CALLSTATE_FUZZ_EXAMPLES`` to run many more, at random, with hypothesis's example database.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from typing import Any, Final, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

import orjson
import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from callstate import keys, tokens
from callstate.event import Event
from callstate.settings import Settings
from callstate.status import CALL_STATUS_RANK, TERMINAL_STATUSES
from receiver.app import create_app
from tests import storedcall
from tests.queued import queued_events
from tests.redisserver import RedisServer
from tests.resplits import resplits
from tests.twiliosign import ACCOUNT, TOKEN, call_params
from workers.store import Store

_EXTRA_EXAMPLES = int(os.environ.get("CALLSTATE_FUZZ_EXAMPLES") or 0)
settings.register_profile(
    "callstate-fuzz",
    max_examples=max(200, _EXTRA_EXAMPLES),
    deadline=None,
    # One TestClient (module fixture) and a per-test Redis serve every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # make test: the same examples every run, nothing written to .hypothesis/; make fuzz: explore.
    derandomize=not _EXTRA_EXAMPLES,
    **({} if _EXTRA_EXAMPLES else {"database": None}),
)
FUZZ: Final = settings.get_profile("callstate-fuzz")

SECRET: Final = "fuzz-secret-key-0123456789abcdefghijklmnop"
RETENTION: Final = 30 * 86_400
LIMIT: Final = 64 * 1024  # Settings.max_body_bytes
FORM: Final = "application/x-www-form-urlencoded"
ORIGIN: Final = "http://testserver"
CALLBACK_PATHS: Final = ("/twilio/call-status", "/twilio/recording-status")
#: The call that is final before the fuzzing starts.
SID: Final = "CA" + "f" * 32
#: The reason of a 400 for a signed callback: the field and what is wrong with it.
REFUSED_FIELD: Final = r"\w+ is (missing|malformed|repeated|a re-split of \w+ \(the name is cut short\))"
#: The most a refusal's reason may say: a short sentence, not a page or a traceback.
MAX_REASON: Final = 200

# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[TestClient]:
    """One started app for every example of the module (a lifespan per example is slow)."""
    app = create_app(Settings(redis_url=redis_server.url, auth_token=TOKEN, secret_key=SECRET))
    with TestClient(app) as client:
        yield client


def read_token() -> str:
    return tokens.issue(SECRET)


def snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key and its serialized value: equal snapshots mean nothing was stored or changed.
    The deployment's counters are left out: they count refusals too (README, "Monitoring")."""
    stored = cast(list[bytes], client.keys("*"))
    return {key: client.dump(key) for key in stored if key != keys.METRICS.encode()}


def seed_callbacks(status: str = "completed") -> list[list[tuple[str, str]]]:
    """The parameters of the callbacks that made the seeded call final."""
    history = ["initiated", "ringing", "in-progress", status]
    return [
        call_params(SID, name, number, CallDuration="42", SipResponseCode="200")
        for number, name in enumerate(history)
    ]


def seed_final_call(client: redis.Redis, status: str = "completed") -> dict[str, Any]:
    """Store a call reconciled to ``status`` (terminal) through the real store; its state."""
    Store(client, RETENTION).apply([Event.create("call", params) for params in seed_callbacks(status)])
    return stored_state(client, SID)


def stored_state(client: redis.Redis, sid: str) -> dict[str, Any]:
    raw = storedcall.state_json(client, sid)
    assert raw is not None, f"{sid} is not stored"
    state: dict[str, Any] = orjson.loads(raw)
    return state


@pytest.fixture
def seeded(redis_client: redis.Redis) -> redis.Redis:
    """The test's Redis with one final call stored."""
    seed_final_call(redis_client)
    return redis_client


def assert_refused(response: Any, allowed: set[int], method: str = "GET") -> None:
    """A 4xx among ``allowed`` with a short plain-text reason (HEAD answers carry no body)."""
    assert response.status_code in allowed, (response.status_code, response.text[:MAX_REASON])
    if method == "HEAD":
        return
    reason = response.text
    assert reason.strip(), "a refusal must say why"
    assert len(reason) <= MAX_REASON, reason[:MAX_REASON]
    assert "Traceback" not in reason
    assert response.headers["content-type"].startswith("text/plain")


def oracle_sign(url: str, pairs: list[tuple[str, str]], token: str = TOKEN) -> str:
    """X-Twilio-Signature as the official twilio package computes it (repeated names allowed)."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)

    class MultiDict(dict[str, list[str]]):
        def getlist(self, name: str) -> list[str]:
            return self[name]

    signature: str = RequestValidator(token).compute_signature(url, MultiDict(grouped))
    return signature


# -- strategies --------------------------------------------------------------------------------

#: Text with separators, '+', '%', NUL, non-ASCII and non-BMP characters.
TEXT: Final = st.text(
    st.one_of(st.sampled_from(list("+&=%# ?/;\x00é€😀𝄞")), st.characters(codec="utf-8")),
    max_size=12,
)
#: What can travel in a header value on the wire: latin-1 without control characters, sometimes huge.
HEADER_VALUES: Final = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40),
    st.sampled_from(["", " ", "A" * 28, "=" * 28, "A" * 100_000, "\xff" * 28, "é" * 14]),
).map(lambda value: value.encode("latin-1"))

#: Bytes that look like a form: separators, escapes (good and broken), invalid UTF-8.
_FORMISH: Final = st.lists(
    st.sampled_from(
        [
            b"CallSid=",
            SID.encode(),
            b"&",
            b"=",
            b"+",
            b"%",
            b"%2",
            b"%zz",
            b"%41",
            b"%FF",
            b"%C3",
            b"%C3%A9",
            b"%ED%A0%80",
            b"%F0%9F%98%80",
            b"%00",
            b"\xff",
            b"\xc3",
            b"\x00",
            b"a",
            b"CallStatus=",
            b";",
        ]
    ),
    max_size=20,
).map(b"".join)


@st.composite
def spliced_callbacks(draw: st.DrawFn) -> bytes:
    """A real callback body with a few arbitrary bytes spliced in somewhere."""
    body = urlencode(call_params(SID, "completed", 5)).encode()
    at = draw(st.integers(0, len(body)))
    return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]


#: Pieces that make a form undecodable: broken escapes, invalid UTF-8 raw or escaped.
_UNDECODABLE: Final = [b"%", b"%2", b"%zz", b"%FF", b"\xff", b"%C3", b"%C3(", b"%ED%A0%80", b"\xc3"]
BODIES: Final = st.one_of(st.binary(max_size=300), _FORMISH, st.just(b""), spliced_callbacks())
CONTENT_TYPES: Final = st.one_of(
    st.sampled_from(
        [
            None,
            FORM,
            FORM + "; charset=utf-8",
            FORM.upper(),
            " " + FORM + " ;q",
            FORM + "-evil",
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "",
            ";",
        ]
    ).map(lambda value: None if value is None else value.encode("latin-1")),
    HEADER_VALUES,
)
#: Signatures that cannot be right: absent, empty, garbage, or over the right request with another token.
BAD_SIGNATURES: Final = st.one_of(st.none(), HEADER_VALUES, st.just(b"wrong-token"))
#: Headers an attacker may add; none of them may change what is checked or stored.
EXTRA_HEADERS: Final = st.dictionaries(
    st.sampled_from(
        [
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
            "host",
            "i-twilio-idempotency-token",
            "authorization",
            "x-padding",
            "transfer-encoding",
        ]
    ).map(str.encode),
    HEADER_VALUES,
    max_size=3,
)


def headers_for(
    url: str, body: bytes, content_type: bytes | None, signature: bytes | None, extra: dict[bytes, bytes]
) -> dict[bytes, bytes]:
    """Headers of a request to ``url`` (path and query); ``b"wrong-token"`` as ``signature`` stands
    for twilio's signature of this very request under another token."""
    headers = dict(extra)
    if content_type is not None:
        headers[b"content-type"] = content_type
    if signature == b"wrong-token":
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        signature = oracle_sign(ORIGIN + url, pairs, token="not-" + TOKEN).encode()
    if signature is not None:
        headers[b"x-twilio-signature"] = signature
    return headers


def as_sent(query: str) -> str:
    """``query`` as it can be on the wire: '#' would start a fragment (never sent) and ASCII control
    characters are refused by HTTP clients and servers, so they are percent-escaped; the rest
    (broken escapes, non-ASCII) goes as is, the client escaping non-ASCII characters."""
    return "".join(
        quote(char) if char == "#" or ord(char) < 0x20 or char == "\x7f" else char for char in query
    )


# -- callbacks without a valid signature -------------------------------------------------------


class TestUnsigned:
    @FUZZ
    @given(
        path=st.sampled_from(CALLBACK_PATHS),
        body=BODIES,
        content_type=CONTENT_TYPES,
        signature=BAD_SIGNATURES,
        extra=EXTRA_HEADERS,
        streamed=st.booleans(),
    )
    def test_posts_are_refused_and_store_nothing(
        self,
        *,
        client: TestClient,
        seeded: redis.Redis,
        path: str,
        body: bytes,
        content_type: bytes | None,
        signature: bytes | None,
        extra: dict[bytes, bytes],
        streamed: bool,
    ) -> None:
        """Any body, content type and headers without a valid signature: a 4xx with a reason,
        and every key in Redis unchanged."""
        before = snapshot(seeded)
        headers = headers_for(path, body, content_type, signature, extra)
        content: Any = (part for part in (body[:7], body[7:])) if streamed else body
        response = client.post(path, content=content, headers=headers)
        assert_refused(response, {400, 403, 413, 415})
        assert snapshot(seeded) == before

    @FUZZ
    @given(
        path=st.sampled_from(CALLBACK_PATHS),
        query=st.one_of(_FORMISH.map(lambda raw: raw.decode("latin-1")), TEXT, st.just("")),
        method=st.sampled_from(["GET", "HEAD"]),
        signature=BAD_SIGNATURES,
        extra=EXTRA_HEADERS,
    )
    def test_gets_are_refused_and_store_nothing(
        self,
        *,
        client: TestClient,
        seeded: redis.Redis,
        path: str,
        query: str,
        method: str,
        signature: bytes | None,
        extra: dict[bytes, bytes],
    ) -> None:
        """Any query string (broken escapes, invalid UTF-8) without a valid signature: a 4xx,
        nothing stored."""
        before = snapshot(seeded)
        url = path + "?" + as_sent(query)
        headers = headers_for(url, b"", None, signature, extra)
        response = client.request(method, url, headers=headers)
        assert_refused(response, {400, 403}, method)
        assert snapshot(seeded) == before

    @FUZZ
    @given(
        path=st.sampled_from(CALLBACK_PATHS),
        size=st.one_of(st.integers(LIMIT - 2, LIMIT + 2), st.integers(LIMIT, 4 * LIMIT)),
        chunk=st.integers(1, 3 * LIMIT),
        streamed=st.booleans(),
        content_type=st.sampled_from([None, FORM.encode(), b"application/json"]),
        signature=BAD_SIGNATURES,
    )
    def test_bodies_over_the_limit_are_413(
        self,
        *,
        client: TestClient,
        seeded: redis.Redis,
        path: str,
        size: int,
        chunk: int,
        streamed: bool,
        content_type: bytes | None,
        signature: bytes | None,
    ) -> None:
        """Over 64 KiB, with a Content-Length or streamed (chunked, none declared): 413 first,
        whatever the rest; at the limit the other checks decide. Nothing stored."""
        before = snapshot(seeded)
        body = (b"CallSid=" + SID.encode() + b"&Pad=").ljust(size, b"x")[:size]
        headers = headers_for(path, b"", content_type, signature, {})
        content: Any = (body[start : start + chunk] for start in range(0, size, chunk)) if streamed else body
        response = client.post(path, content=content, headers=headers)
        assert_refused(response, {413} if size > LIMIT else {403, 415})
        assert snapshot(seeded) == before

    @FUZZ
    @given(
        path=st.sampled_from([*CALLBACK_PATHS, "/calls", f"/calls/{SID}"]),
        method=st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "HEAD", "POST"]),
        body=BODIES,
    )
    def test_wrong_methods_are_refused(
        self, client: TestClient, seeded: redis.Redis, path: str, method: str, body: bytes
    ) -> None:
        """Methods a route does not take are 405; HEAD is a GET (refused unsigned or without a
        token). Nothing stored."""
        before = snapshot(seeded)
        headers = {"content-type": FORM, "authorization": "Bearer " + read_token()}
        response = client.request(method, path, content=body, headers=headers)
        if method == "HEAD" and path in CALLBACK_PATHS:
            assert_refused(response, {403}, method)
        elif method == "HEAD":
            assert response.status_code == 200  # a valid token: HEAD reads like GET
        elif method == "POST" and path in CALLBACK_PATHS:
            assert_refused(response, {400, 403})
        else:
            assert_refused(response, {405})
        assert snapshot(seeded) == before

    @FUZZ
    @given(
        path=st.sampled_from(CALLBACK_PATHS),
        content_length=st.one_of(
            HEADER_VALUES, st.sampled_from([b"-1", b"0", b"1" * 30, b"9" * 5000, b"\xb2", b" 5", b"5 "])
        ),
        signature=BAD_SIGNATURES,
    )
    @example(path=CALLBACK_PATHS[0], content_length=b"9" * 5000, signature=None)
    def test_garbage_content_length_is_refused(
        self,
        *,
        client: TestClient,
        seeded: redis.Redis,
        path: str,
        content_length: bytes,
        signature: bytes | None,
    ) -> None:
        """A Content-Length that is not a small decimal number is refused like the rest (uvicorn
        rejects most of them before the app; the app must not rely on it). Nothing stored."""
        before = snapshot(seeded)
        body = urlencode(call_params(SID, "busy", 9)).encode()
        headers = headers_for(path, body, FORM.encode(), signature, {})
        headers[b"content-length"] = content_length
        response = client.post(path, content=body, headers=headers)
        assert_refused(response, {400, 403, 413})
        assert snapshot(seeded) == before

    @FUZZ
    @given(
        path=st.sampled_from(CALLBACK_PATHS),
        method=st.sampled_from(["POST", "GET"]),
        data=st.tuples(_FORMISH, st.sampled_from(_UNDECODABLE), _FORMISH).map(b"".join),
        signature=st.one_of(HEADER_VALUES.filter(bool), st.just(b"wrong-token")),
    )
    @example(path=CALLBACK_PATHS[0], method="POST", data=b"CallSid=%zz", signature=b"wrong-token")
    @example(path=CALLBACK_PATHS[1], method="GET", data=b"CallSid=%FF", signature=b"A" * 28)
    def test_wrong_signature_is_403_even_when_the_content_is_unreadable(
        self,
        *,
        client: TestClient,
        seeded: redis.Redis,
        path: str,
        method: str,
        data: bytes,
        signature: bytes,
    ) -> None:
        """Checks run size, content type, signature (403), then content (400), and a 400 means
        "correctly signed but unusable" (docs/contracts.md, "Order of the checks"). A wrong signature is
        a 403 even when the form cannot be decoded: no signature over it can be Twilio's."""
        before = snapshot(seeded)
        if method == "POST":
            headers = headers_for(path, data, FORM.encode(), signature, {})
            response = client.post(path, content=data, headers=headers)
        else:
            url = path + "?" + as_sent(data.decode("latin-1"))
            response = client.get(url, headers=headers_for(url, b"", None, signature, {}))
        assert_refused(response, {403})
        assert snapshot(seeded) == before


# -- callbacks signed by Twilio's own code, with strange content -------------------------------

#: Strings where numbers are expected: signs, exponents, other digits, overflows, the empty string.
NUMBERS: Final = st.one_of(
    st.sampled_from(
        [
            "-1",
            "0",
            "3",
            "4",
            "999999",
            "1000000",
            "1000001",
            "999999999",
            "1" * 10,
            "9" * 19,
            "9" * 5000,
            "²",
            "١٢",
            "1e3",
            "0x10",
            " 3",
            "3 ",
            "+3",
            "3.0",
            "",
            "NaN",
            "18446744073709551616",
            "\x00",
        ]
    ),
    st.integers().map(str),
    TEXT,
)
#: Strings where an RFC 2822 Timestamp is expected.
TIMES: Final = st.one_of(
    st.sampled_from(
        [
            "Tue, 01 Sep 2026 12:00:03 +0000",
            "Fri, 31 Dec 9999 23:59:59 -2359",
            "Mon, 01 Jan 0001 00:00:00 +2359",
            "Sat, 31 Feb 2026 12:00:00 +0000",
            "Tue, 01 Sep 26 12:00:00 +0000",
            "Tue, 01 Sep 2026 25:61:61 +0000",
            "Tue, 01 Sep 2026 12:00:00 +9999",
            "Tue, 01 Sep 2026 12:00:00 -0000",
            "Tue, 01 Sep 99999 12:00:00 +0000",
            "Tue, 01 Sep 0000 12:00:00 +0000",
            "2026-09-01T12:00:00Z",
            "",
            "0",
        ]
    ),
    st.datetimes().map(lambda moment: moment.strftime("%a, %d %b %Y %H:%M:%S +0000")),
    TEXT,
)
_KNOWN_STATUSES: Final = list(CALL_STATUS_RANK)
STATUSES: Final = st.one_of(
    st.sampled_from(_KNOWN_STATUSES),
    st.sampled_from(_KNOWN_STATUSES).map(str.upper),
    st.sampled_from(_KNOWN_STATUSES).map(lambda status: " " + status + "\x00"),
    TEXT,
)
_NAMES: Final = st.one_of(st.sampled_from(["Digits", "x", "", "callsid", "Foo[]", "a.b"]), TEXT)


def sids(prefix: str) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789abcdefABCDEF"), min_size=32, max_size=32).map(
        lambda digits: prefix + digits
    )


@st.composite
def strange_callbacks(draw: st.DrawFn, final_status: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(method, path, params) of a callback Twilio could sign: mostly about the final call ``SID``,
    with unknown parameters, repeated and missing fields and odd values everywhere. A call event
    never carries a terminal status other than ``final_status``: another one could rightly change
    a final call (a later SequenceNumber wins)."""
    kind = draw(st.sampled_from(["call", "recording"]))
    params: list[tuple[str, str]] = []
    call_sid = draw(st.one_of(st.just(SID), st.just("CA" + "F" * 32), sids("CA"), TEXT))
    if draw(st.integers(0, 9)):  # now and then no CallSid at all
        params.append(("CallSid", call_sid))
    if kind == "recording" and draw(st.integers(0, 9)):
        params.append(("RecordingSid", draw(st.one_of(sids("RE"), TEXT))))
    fields: dict[str, st.SearchStrategy[str]] = {
        "AccountSid": st.one_of(st.just(ACCOUNT), TEXT),
        "ParentCallSid": st.one_of(sids("CA"), TEXT),
        "CallStatus": STATUSES.filter(
            lambda status: kind == "recording" or status == final_status or status not in TERMINAL_STATUSES
        ),
        "SequenceNumber": NUMBERS,
        "Timestamp": TIMES,
        "CallDuration": NUMBERS,
        "SipResponseCode": NUMBERS,
        "AnsweredBy": TEXT,
        "Direction": TEXT,
        "From": TEXT,
        "To": TEXT,
        "RecordingStatus": STATUSES,
        "RecordingUrl": TEXT,
        "RecordingDuration": NUMBERS,
        "RecordingChannels": NUMBERS,
        "RecordingStartTime": TIMES,
        "ErrorCode": NUMBERS,
    }
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=8)):
        params.append((name, draw(fields[name])))
    params += draw(st.lists(st.tuples(_NAMES, TEXT), max_size=4))
    method = draw(st.sampled_from(["POST", "GET"]))
    path = "/twilio/call-status" if kind == "call" else "/twilio/recording-status"
    shuffled: list[tuple[str, str]] = draw(st.permutations(params))
    return method, path, shuffled


def send_signed(client: TestClient, method: str, path: str, params: list[tuple[str, str]]) -> Any:
    """A callback signed by the official twilio package, as Twilio would send it."""
    if method == "GET":
        url = ORIGIN + path + ("?" + urlencode(params) if params else "")
        return client.get(url, headers={"x-twilio-signature": oracle_sign(url, [])})
    headers = {"content-type": FORM, "x-twilio-signature": oracle_sign(ORIGIN + path, params)}
    return client.post(path, content=urlencode(params).encode(), headers=headers)


class TestSignedButStrange:
    @FUZZ
    @given(data=st.data(), final_status=st.sampled_from(sorted(TERMINAL_STATUSES)))
    def test_a_final_call_stays_final_with_its_status(
        self, client: TestClient, redis_client: redis.Redis, data: st.DataObject, final_status: str
    ) -> None:
        """Correctly signed strange callbacks are 204 or 400 naming the field; applied by the real
        store, they never make a final call non-final or change its status, and the read API still
        serves every call they touched."""
        redis_client.flushall()
        seed_final_call(redis_client, final_status)
        requests = data.draw(st.lists(strange_callbacks(final_status), min_size=1, max_size=4))
        for method, path, params in requests:
            response = send_signed(client, method, path, params)
            event(f"answer {response.status_code}")
            if response.status_code != 204:
                assert_refused(response, {400})
                assert re.fullmatch(REFUSED_FIELD, response.text), response.text

        events = [Event.from_wire(wire) for wire in queued_events(redis_client)]
        Store(redis_client, RETENTION).apply(events)
        state = stored_state(redis_client, SID)
        assert (state["final"], state["status"]) == (True, final_status)

        auth = {"authorization": "Bearer " + read_token()}
        for sid in {SID} | {applied.call_sid for applied in events if applied.call_sid}:
            response = client.get(f"/calls/{sid}", headers=auth)
            assert response.status_code == 200, response.text
            assert response.json() == stored_state(redis_client, sid)
        listed = client.get("/calls", params={"final": "true", "limit": "1000"}, headers=auth)
        assert listed.status_code == 200
        assert SID in [call["sid"] for call in listed.json()["calls"]]


# -- re-splits of captured callbacks -----------------------------------------------------------


@functools.cache
def seed_resplits(index: int) -> list[list[tuple[str, str]]]:
    """Every single- and double-boundary re-split of seeded callback ``index`` (tests/resplits.py)."""
    return resplits(seed_callbacks()[index])


class TestResplits:
    @settings(FUZZ, max_examples=max(40, _EXTRA_EXAMPLES))
    @given(data=st.data())
    def test_resplits_of_a_captured_callback_change_nothing(
        self, client: TestClient, redis_client: redis.Redis, data: st.DataObject
    ) -> None:
        """Re-splits of the seeded call's callbacks sent under the captured signatures (issue 10,
        section 1): each is 204 or a 400 naming the field, and once the queued events are applied
        by the real store the call's state, version and stored events are byte-identical (the
        re-splits count as deliveries of the callback they split: docs/redis-schema.md)."""
        redis_client.flushall()
        seed_final_call(redis_client)
        before = storedcall.content(redis_client, SID)
        index = data.draw(st.sampled_from(range(len(seed_callbacks()))))
        captured = oracle_sign(ORIGIN + "/twilio/call-status", seed_callbacks()[index])
        variants = data.draw(st.lists(st.sampled_from(seed_resplits(index)), min_size=1, max_size=6))
        for variant in variants:
            headers = {"content-type": FORM, "x-twilio-signature": captured}
            response = client.post(
                "/twilio/call-status", content=urlencode(variant).encode(), headers=headers
            )
            event(f"answer {response.status_code}")
            if response.status_code != 204:
                assert_refused(response, {400})
                assert re.fullmatch(REFUSED_FIELD, response.text), response.text

        Store(redis_client, RETENTION).apply([Event.from_wire(w) for w in queued_events(redis_client)])
        assert storedcall.content(redis_client, SID) == before


# -- the read API ------------------------------------------------------------------------------

_PATH_TEXT: Final = st.one_of(
    # "." and ".." are dot segments, which the HTTP client resolves before sending; a trailing "/"
    # (even escaped) gets Starlette's redirect to the path without it, here the listing.
    TEXT.filter(lambda text: text not in ("", ".", "..") and not text.endswith("/")).map(
        lambda text: quote(text, safe="")
    ),
    st.sampled_from(["%FF", "%", "%zz", "%00", "CA" + "f" * 31, SID.lower(), SID + "%0A", SID + "x"]),
    sids("CA").filter(lambda sid: sid != SID),
)


def well_formed_but_invalid(kind: str) -> bytes:
    """A read token that looks right and must not open the door."""
    if kind == "other key":
        token = tokens.issue("another-secret" * 3)
    elif kind == "expired":
        token = tokens.issue(SECRET, ttl=1, now=lambda: 0.0)
    else:  # altered
        token = tokens.issue(SECRET) + "A"
    return ("Bearer " + token).encode()


AUTHORIZATIONS: Final = st.one_of(
    st.none(),
    HEADER_VALUES,
    st.sampled_from(["Bearer", "Bearer ", "bearer x", "Basic dXNlcjpwYXNz", "Token abc"]).map(str.encode),
    st.sampled_from(["other key", "expired", "altered"]).map(well_formed_but_invalid),
)


class TestReadApi:
    @FUZZ
    @given(
        path=st.one_of(
            st.just("/calls"), st.just(f"/calls/{SID}"), _PATH_TEXT.map(lambda sid: "/calls/" + sid)
        ),
        authorization=AUTHORIZATIONS,
        query=st.one_of(st.just(""), TEXT.map(as_sent)),
    )
    def test_without_a_valid_token_is_401(
        self,
        *,
        client: TestClient,
        seeded: redis.Redis,
        path: str,
        authorization: bytes | None,
        query: str,
    ) -> None:
        """No token, a garbage one, one of another key, an expired or altered one: 401 saying so,
        whatever the path and query (404 only for paths that are no route)."""
        headers = {} if authorization is None else {b"authorization": authorization}
        response = client.get(path + ("?" + query if query else ""), headers=headers)
        assert_refused(response, {401, 404})
        if response.status_code == 404:
            assert unquote(path).count("/") > 2, "only a path that is no route may be a 404"

    @FUZZ
    @given(sid=_PATH_TEXT)
    def test_garbage_call_sids_are_400_or_404(
        self, client: TestClient, seeded: redis.Redis, sid: str
    ) -> None:
        """With a valid token, a path parameter that is not a stored CallSid is 400 (malformed) or
        404 (unknown, or no route)."""
        response = client.get("/calls/" + sid, headers={"authorization": "Bearer " + read_token()})
        assert_refused(response, {400, 404})

    @FUZZ
    @given(
        params=st.lists(
            st.tuples(
                st.sampled_from(["limit", "final", "status", "x", "LIMIT"]),
                st.one_of(
                    NUMBERS,
                    st.sampled_from(
                        ["true", "false", "TRUE", "1", "0", "yes", "İ", "completed", "in-progress"]
                    ),
                    STATUSES,
                    st.text(st.characters(categories=["L"]), min_size=1, max_size=40),
                ),
            ),
            max_size=4,
        ),
        raw_suffix=st.sampled_from(["", "&limit=%FF", "&final=%zz", "&status=%", "&&=&"]),
    )
    # Digits that str.isdigit() accepts and int() does not, and more digits than int() converts.
    @example(params=[("limit", "²")], raw_suffix="")
    @example(params=[("limit", "9" * 5000)], raw_suffix="")
    def test_garbage_query_parameters_are_400_or_a_listing(
        self, client: TestClient, seeded: redis.Redis, params: list[tuple[str, str]], raw_suffix: str
    ) -> None:
        """``limit``, ``final`` and ``status`` of any value: 400 naming the parameter, or 200 with
        ``{"calls": [...]}`` that honours ``limit`` and ``final``."""
        url = "/calls?" + urlencode(params) + raw_suffix
        response = client.get(url, headers={"authorization": "Bearer " + read_token()})
        if response.status_code != 200:
            assert_refused(response, {400})
            assert any(name in response.text for name in ("limit", "final", "status"))
            return
        calls = response.json()["calls"]
        query = dict(parse_qsl(url.partition("?")[2], keep_blank_values=True))
        assert len(calls) <= int(query.get("limit", "100"))
        if query.get("final", "").lower() in ("true", "1"):
            assert all(call["final"] for call in calls)
        if query.get("final", "").lower() in ("false", "0"):
            assert not any(call["final"] for call in calls)
