"""Why a signature was refused: the likely cause (pure, with twilio's validator signing), the rate
limit (an injected clock), and the log line of the running app (no secret, no query)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from starlette.testclient import TestClient
from starlette.types import Scope
from twilio.request_validator import RequestValidator

from callstate.errors import InvalidSignature
from callstate.settings import Settings
from receiver.app import create_app
from receiver.publicurl import TrustedProxies, public_url
from receiver.rejections import Attempt, RejectionLog, likely_cause, redact
from receiver.signature import Keyring
from tests.redisserver import RedisServer
from tests.twiliosign import TOKEN, MultiDict, call_params, call_sid

PATH = "/twilio/call-status"
PARAMS = call_params(call_sid(1), "ringing", 1)


def scope(host: str, *, forwarded: dict[str, str] | None = None, peer: str = "10.0.0.5") -> Scope:
    headers = [(b"host", host.encode())]
    headers += [(name.encode(), value.encode()) for name, value in (forwarded or {}).items()]
    return {
        "type": "http",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": headers,
        "client": (peer, 40000),
        "server": ("127.0.0.1", 8000),
    }


def cause(request: Scope, base: str | None, signed_url: str, trusted: str = "127.0.0.1") -> str:
    """The likely cause the app would log for ``request``, signed by twilio over ``signed_url``."""
    proxies = TrustedProxies.parse(trusted)
    signature: str = RequestValidator(TOKEN).compute_signature(signed_url, MultiDict.of(PARAMS))
    attempt = Attempt(
        request,
        public_url(request, base, proxies),
        base,
        proxies,
        Keyring(TOKEN),
        PARAMS,
        signature,
        None,
        None,
    )
    return likely_cause(InvalidSignature("signature does not match"), attempt)


class TestLikelyCause:
    def test_http_base_url_behind_a_tls_terminator_names_the_scheme(self) -> None:
        """PUBLIC_BASE_URL=http://... while Twilio calls https://..."""
        request = scope("calls.example.com", forwarded={"x-forwarded-proto": "https"})
        found = cause(request, "http://calls.example.com", "https://calls.example.com" + PATH)
        assert found.startswith(f"the signature matches https://calls.example.com{PATH}: PUBLIC_BASE_URL")
        assert "scheme (http here, https called)" in found

    def test_another_host_in_the_base_url_names_the_host(self) -> None:
        request = scope("new.example.com", forwarded={"x-forwarded-proto": "https"})
        found = cause(request, "https://old.example.com", "https://new.example.com" + PATH)
        assert "host (old.example.com here, new.example.com called)" in found

    def test_a_prefix_the_proxy_does_not_strip_names_the_path(self) -> None:
        """PUBLIC_BASE_URL carries /cs but the proxy passes /cs through: /cs/cs/... is checked."""
        request = scope("x.example.com", forwarded={"x-forwarded-proto": "https"})
        request["raw_path"] = b"/cs" + PATH.encode()
        request["path"] = "/cs" + PATH
        found = cause(request, "https://x.example.com/cs", f"https://x.example.com/cs{PATH}")
        assert f"path (/cs/cs{PATH} here, /cs{PATH} called: a path prefix?)" in found

    def test_untrusted_proxy_is_named(self) -> None:
        """No PUBLIC_BASE_URL, and the forwarded headers came from a peer that is not trusted."""
        request = scope(
            "10.0.0.9:8000", forwarded={"x-forwarded-proto": "https", "x-forwarded-host": "c.example"}
        )
        found = cause(request, None, "https://c.example" + PATH)
        assert "the proxy at 10.0.0.5 is not in FORWARDED_ALLOW_IPS" in found

    def test_trailing_slash_is_named(self) -> None:
        request = scope("c.example")
        found = cause(request, "https://c.example", f"https://c.example{PATH}/")
        assert found.endswith("the path differs by a trailing slash")

    def test_wrong_token_or_forgery_when_nothing_matches(self) -> None:
        request = scope("c.example")
        attempt = Attempt(
            request, "https://c.example" + PATH, "https://c.example", TrustedProxies(), Keyring(TOKEN),
            PARAMS, "A" * 28, None, None,
        )  # fmt: skip
        found = likely_cause(InvalidSignature("signature does not match"), attempt)
        assert found.startswith("no URL variant matches: the auth token or key is not the one Twilio used")

    def test_undecodable_parameters(self) -> None:
        error = InvalidSignature("signature cannot be verified: invalid UTF-8", code="undecodable")
        assert likely_cause(error, None).startswith("the parameters cannot be decoded (signature")

    def test_missing_header(self) -> None:
        missing = InvalidSignature("X-Twilio-Signature header is missing", code="missing")
        assert "not sent by Twilio" in likely_cause(missing, None)


def test_redact_keeps_no_query() -> None:
    """A GET callback's query holds phone numbers: the logged URL does not."""
    assert redact("https://c.example/p?From=%2B1555&To=x#f") == "https://c.example/p?..."
    assert redact("https://c.example/p") == "https://c.example/p"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        dict(getattr(record, "callstate_fields", {}))
        for record in caplog.records
        if record.getMessage() == "signature_rejected"
    ]


class TestRateLimit:
    def test_one_line_per_interval_counting_the_rest(self, caplog: pytest.LogCaptureFixture) -> None:
        """A flood writes one line per interval; the next line says how many it skipped."""
        clock = Clock()
        log = RejectionLog(interval=10, clock=clock)
        error = InvalidSignature("X-Twilio-Signature header is missing")
        with caplog.at_level(logging.WARNING, logger="callstate.web"):
            written = [log.report(error, None) for _ in range(1000)]
            clock.now = 10.0
            written.append(log.report(error, None))
        assert written.count(True) == 2
        assert [line["suppressed"] for line in lines(caplog)] == [0, 999]


@pytest.fixture
def client(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[TestClient]:
    app = create_app(
        Settings(redis_url=redis_server.url, auth_token=TOKEN, public_base_url="http://c.example")
    )
    with TestClient(app) as started:
        yield started


def test_a_flood_of_forgeries_logs_one_line_without_secrets(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """200 forged GET callbacks: 200 answers of 403, one ``signature_rejected`` line, which names
    the checked URL without its query and holds neither the token nor the signature."""
    forged = "Zm9yZ2VkLXNpZ25hdHVyZS0wMDAwMA=="[:28]
    query = urlencode(PARAMS)
    with caplog.at_level(logging.WARNING, logger="callstate.web"):
        codes = {
            client.get(f"{PATH}?{query}", headers={"x-twilio-signature": forged}).status_code
            for _ in range(200)
        }
    assert codes == {403}
    [line] = lines(caplog)
    assert line["url"] == f"http://c.example{PATH}?..."
    assert line["reason"] == "signature does not match"
    text = repr(line)
    assert TOKEN not in text
    assert forged not in text
    assert "+1500555" not in text
