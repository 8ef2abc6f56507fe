"""The Twilio REST client (workers.twilioapi) against a local HTTP server playing the Calls API.

:class:`FakeTwilio` answers ``GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with the
Call resource JSON (docs/twilio.md, "The REST Call resource"), or with an error, a hang, or
garbage, per CallSid, and records every request. The sweep's tests use it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from callstate.errors import ConfigError
from callstate.settings import Settings
from tests.faketwilio import (
    ACCOUNT,
    CALL,
    KEY_SECRET,
    KEY_SID,
    SUB_TOKEN,
    SUBACCOUNT,
    TIMEOUT,
    TOKEN,
    FakeTwilio,
    basic,
)
from tests.redisserver import free_port
from workers.twilioapi import TwilioAPI, TwilioAPIError


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    yield fake
    fake.close()


def client(fake: FakeTwilio, **credentials: Any) -> TwilioAPI:
    options: dict[str, Any] = {"account_sid": ACCOUNT, "auth_token": TOKEN}
    options.update(credentials)
    return TwilioAPI(fake.url, timeout=TIMEOUT, **options)


def error_of(api: TwilioAPI, account: str = ACCOUNT, sid: str = CALL) -> TwilioAPIError:
    with pytest.raises(TwilioAPIError) as info:
        api.fetch_call(account, sid)
    return info.value


class TestFetchCall:
    def test_returns_the_call_resource(self, twilio: FakeTwilio) -> None:
        """A 200 answer is the parsed Call resource, fetched with GET from the documented path."""
        twilio.call(CALL, "busy")
        resource = client(twilio).fetch_call(ACCOUNT, CALL)
        assert (resource["sid"], resource["status"], resource["duration"]) == (CALL, "busy", None)
        assert [(r.method, r.path) for r in twilio.requests] == [
            ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json")
        ]

    def test_account_sid_and_auth_token_go_in_basic_auth(self, twilio: FakeTwilio) -> None:
        """Without an API key the account SID and auth token are the Basic credentials."""
        twilio.call(CALL)
        client(twilio).fetch_call(ACCOUNT, CALL)
        assert twilio.requests[0].authorization == basic(ACCOUNT, TOKEN)

    def test_an_api_key_is_preferred(self, twilio: FakeTwilio) -> None:
        """With an API key configured, its SID and secret are the Basic credentials."""
        twilio.call(CALL)
        client(twilio, api_key_sid=KEY_SID, api_key_secret=KEY_SECRET).fetch_call(ACCOUNT, CALL)
        assert twilio.requests[0].authorization == basic(KEY_SID, KEY_SECRET)

    def test_a_subaccount_call_uses_the_parent_credentials(self, twilio: FakeTwilio) -> None:
        """A subaccount's call is read with the main credentials and the subaccount SID in the path."""
        twilio.call(CALL, account=SUBACCOUNT)
        api = client(twilio, subaccount_tokens={SUBACCOUNT: SUB_TOKEN})
        assert api.fetch_call(SUBACCOUNT, CALL)["account_sid"] == SUBACCOUNT
        assert twilio.requests[0].account_sid == SUBACCOUNT
        assert twilio.requests[0].authorization == basic(ACCOUNT, TOKEN)

    def test_a_subaccount_token_serves_when_no_main_credentials_are_set(self, twilio: FakeTwilio) -> None:
        """With only subaccount tokens, a subaccount's call is read with its own SID and token."""
        twilio.call(CALL, account=SUBACCOUNT)
        api = TwilioAPI(twilio.url, subaccount_tokens={SUBACCOUNT: SUB_TOKEN}, timeout=TIMEOUT)
        api.fetch_call(SUBACCOUNT, CALL)
        assert twilio.requests[0].authorization == basic(SUBACCOUNT, SUB_TOKEN)
        assert api.credentials_for(ACCOUNT) is None
        with pytest.raises(TwilioAPIError):
            api.fetch_call(ACCOUNT, CALL)
        assert len(twilio.requests) == 1

    def test_malformed_sids_are_refused_before_any_request(self, twilio: FakeTwilio) -> None:
        """A SID that is not AC/CA + 32 hex digits never reaches the URL."""
        for account, sid in [(ACCOUNT, "CA../../x"), ("AC123", CALL), (ACCOUNT, CALL + "0")]:
            with pytest.raises(ValueError, match="SIDs"):
                client(twilio).fetch_call(account, sid)
        assert twilio.requests == []


class TestErrors:
    def test_404_means_the_call_is_unknown(self, twilio: FakeTwilio) -> None:
        """Twilio's 404 (its error JSON) is not_found and not worth retrying."""
        error = error_of(client(twilio))
        assert (error.status, error.not_found, error.transient, error.credentials) == (
            404,
            True,
            False,
            False,
        )

    def test_429_is_transient_with_retry_after(self, twilio: FakeTwilio) -> None:
        """A 429 is rate_limited and transient, and carries Twilio's Retry-After."""
        twilio.fail(CALL, 429, headers={"Retry-After": "2"})
        error = error_of(client(twilio))
        assert (error.status, error.rate_limited, error.transient, error.retry_after) == (
            429,
            True,
            True,
            2.0,
        )

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_server_errors_are_transient(self, twilio: FakeTwilio, status: int) -> None:
        """5xx answers are transient."""
        twilio.fail(CALL, status)
        error = error_of(client(twilio))
        assert (error.status, error.transient, error.not_found, error.rate_limited) == (
            status,
            True,
            False,
            False,
        )

    @pytest.mark.parametrize("status", [401, 403])
    def test_refused_credentials(self, twilio: FakeTwilio, status: int) -> None:
        """401 and 403 are credential errors, not transient."""
        twilio.fail(CALL, status, b'{"code": 20003, "message": "Authenticate", "status": 401}')
        error = error_of(client(twilio))
        assert (error.status, error.credentials, error.transient) == (status, True, False)

    def test_a_timeout_is_transient_and_quick(self, twilio: FakeTwilio) -> None:
        """A server that does not answer gives a transient "timeout" error: the client gave up at its
        own timeout, since the fake holds the request for 10 s and then closes it unanswered (which
        would be a "connection failed")."""
        twilio.hang(CALL)
        error = error_of(client(twilio))
        assert (error.status, error.reason, error.transient) == (None, "timeout", True)

    def test_a_refused_connection_is_transient(self) -> None:
        """Nothing listening on the port: a transient error without an HTTP status."""
        api = TwilioAPI(
            f"http://127.0.0.1:{free_port()}", account_sid=ACCOUNT, auth_token=TOKEN, timeout=TIMEOUT
        )
        error = error_of(api)
        assert (error.status, error.transient) == (None, True)
        assert error.reason.startswith("connection failed")

    @pytest.mark.parametrize(
        ("body", "reason"), [(b'{"sid": "CA', "malformed JSON"), (b"[1, 2]", "answer is not a JSON object")]
    )
    def test_an_unreadable_answer(self, twilio: FakeTwilio, body: bytes, reason: str) -> None:
        """A 200 that is not a JSON object is an error of its own kind, not transient."""
        twilio.fail(CALL, 200, body)
        error = error_of(client(twilio))
        assert (error.reason, error.transient, error.not_found, error.credentials) == (
            reason,
            False,
            False,
            False,
        )

    def test_a_redirect_is_not_followed(self, twilio: FakeTwilio) -> None:
        """A 3xx is an error: following it would hand the credentials to the Location."""
        other = "CA" + "2" * 32
        twilio.call(other)
        twilio.fail(
            CALL, 302, headers={"Location": f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT}/Calls/{other}.json"}
        )
        error = error_of(client(twilio))
        assert error.status == 302
        assert twilio.asked() == [CALL]

    def test_messages_never_hold_credentials(self, twilio: FakeTwilio) -> None:
        """No error's message or repr contains a token, a key secret or a phone number."""
        twilio.fail(CALL, 401, b'{"message": "Authenticate"}')
        errors = [
            error_of(client(twilio)),
            error_of(client(twilio, api_key_sid=KEY_SID, api_key_secret=KEY_SECRET)),
        ]
        twilio.hang(CALL)
        errors.append(error_of(client(twilio)))
        for error in errors:
            for text in (str(error), repr(error), error.reason):
                for secret in (TOKEN, KEY_SECRET, basic(ACCOUNT, TOKEN)[6:], "+1"):
                    assert secret not in text


class TestConfiguration:
    def test_from_settings_without_credentials_is_none(self) -> None:
        """No account token, API key or subaccount token: no client (the sweep then only prunes)."""
        assert TwilioAPI.from_settings(Settings()) is None
        assert TwilioAPI.from_settings(Settings(auth_token=TOKEN)) is None

    def test_from_settings_with_credentials(self) -> None:
        """Account SID and token make a client for the configured API base."""
        api = TwilioAPI.from_settings(Settings(account_sid=ACCOUNT, auth_token=TOKEN))
        assert api is not None
        assert api.base_url == "https://api.twilio.com"
        assert api.credentials_for(SUBACCOUNT) == api.credentials_for(ACCOUNT)

    def test_plain_http_is_refused_beyond_loopback(self) -> None:
        """Basic credentials never travel over plain HTTP except to a loopback address."""
        with pytest.raises(ConfigError) as info:
            TwilioAPI("http://api.example.com", account_sid=ACCOUNT, auth_token=TOKEN)
        assert info.value.variable == "TWILIO_API_BASE"
        TwilioAPI("http://localhost:8080", account_sid=ACCOUNT, auth_token=TOKEN)
        TwilioAPI("http://[::1]:8080", account_sid=ACCOUNT, auth_token=TOKEN)

    def test_repr_hides_the_secrets(self) -> None:
        """Neither the client nor its credentials show a secret in repr."""
        api = TwilioAPI(account_sid=ACCOUNT, auth_token=TOKEN, api_key_sid=KEY_SID, api_key_secret=KEY_SECRET)
        assert TOKEN not in repr(api)
        assert KEY_SECRET not in repr(api.credentials_for(ACCOUNT))
