"""Webhook SharedKey signatures (HMAC-SHA256, ``X-Twilio-Webhooks-Signature-Settings``) and host case,
with twilio 9.13's ``RequestValidator(secret).compute_signature(url, params, "HMAC_SHA256")`` as the
oracle: pure (receiver.signature) and over HTTP (the app on a real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from callstate.errors import ConfigError, InvalidSignature
from callstate.event import Event
from callstate.settings import Settings
from receiver.app import create_app
from receiver.signature import Keyring, parse_settings_header, verify
from tests.queued import queued_events
from tests.redisserver import RedisServer
from tests.twiliosign import TOKEN, MultiDict, call_params, call_sid

ORACLE = settings(max_examples=100, derandomize=True, database=None)
# One app (a fixture) serves every example; each example starts from an empty queue.
OVER_HTTP = settings(
    max_examples=20,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

OLD_ID, OLD_SECRET = "webhooks_sharedkey_old", "old-shared-secret-0123456789"
NEW_ID, NEW_SECRET = "webhooks_sharedkey_new", "new-shared-secret-9876543210"
KEYS = Keyring(TOKEN, shared={OLD_ID: OLD_SECRET, NEW_ID: NEW_SECRET})
URL = "https://calls.example.com/twilio/call-status"


def sha256_signature(secret: str, url: str, params: list[tuple[str, str]]) -> str:
    """The oracle: what Twilio sends in X-Twilio-Signature for a SharedKey request."""
    result: str = RequestValidator(secret).compute_signature(url, MultiDict.of(params), "HMAC_SHA256")
    return result


def header(key_id: str, algorithm: str = "HMAC_SHA256") -> str:
    return f"key={key_id},algorithm={algorithm}"


def refusal(
    url: str, params: list[tuple[str, str]], signature: str, settings_header: str | None
) -> str | None:
    """None if verify() accepts, else its reason."""
    try:
        verify(KEYS, url, params, signature, signature_settings=settings_header)
    except InvalidSignature as error:
        return error.reason
    return None


texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
pairs = st.lists(st.tuples(st.text(st.characters(codec="utf-8"), min_size=1, max_size=10), texts), max_size=8)
paths = st.text(st.sampled_from("abcXYZ019-_~/"), max_size=20)


class TestPure:
    @ORACLE
    @given(pairs, paths, st.sampled_from([OLD_ID, NEW_ID]))
    def test_oracle_signatures_verify_under_the_named_key(
        self, params: list[tuple[str, str]], path: str, key_id: str
    ) -> None:
        """Any parameters, any path: the oracle's HMAC-SHA256 under the named key is accepted."""
        secret = {OLD_ID: OLD_SECRET, NEW_ID: NEW_SECRET}[key_id]
        url = f"https://calls.example.com/{path}?t=1"
        assert refusal(url, params, sha256_signature(secret, url, params), header(key_id)) is None

    @ORACLE
    @given(pairs)
    def test_a_signature_under_one_key_is_refused_when_the_header_names_the_other(
        self, params: list[tuple[str, str]]
    ) -> None:
        """Only the named key is tried: rotation keeps both, but never mixes them."""
        signature = sha256_signature(OLD_SECRET, URL, params)
        assert refusal(URL, params, signature, header(NEW_ID)) == "signature does not match"

    def test_the_port_forms_are_tried_as_for_the_auth_token(self) -> None:
        """Signed over https://host:443/..., as some Twilio paths do: still accepted."""
        params = call_params(call_sid(1), "ringing", 1)
        signature = sha256_signature(NEW_SECRET, "https://calls.example.com:443/twilio/call-status", params)
        assert refusal(URL, params, signature, header(NEW_ID)) is None

    def test_unknown_key_id_is_refused_naming_it(self) -> None:
        params = call_params(call_sid(2), "ringing", 1)
        reason = refusal(URL, params, sha256_signature("x", URL, params), header("webhooks_sharedkey_gone"))
        assert reason == (
            "X-Twilio-Webhooks-Signature-Settings names key 'webhooks_sharedkey_gone', "
            "which TWILIO_SHARED_KEYS does not hold"
        )

    def test_unknown_algorithm_is_refused_naming_it(self) -> None:
        params = call_params(call_sid(3), "ringing", 1)
        reason = refusal(URL, params, "A" * 88, header(NEW_ID, "HMAC_SHA512"))
        assert reason is not None
        assert "names algorithm 'HMAC_SHA512', which callstate does not support" in reason

    def test_an_unprintable_key_id_is_not_echoed(self) -> None:
        """The key id comes from the request: only a plain one goes into the reason."""
        reason = refusal(URL, [], "A" * 44, header("<script>"))
        assert reason is not None
        assert "<script>" not in reason

    def test_auth_token_signatures_still_work_beside_shared_keys(self) -> None:
        """No settings header: the auth token and HMAC-SHA1, as before."""
        params = call_params(call_sid(4), "ringing", 1)
        signature: str = RequestValidator(TOKEN).compute_signature(URL, MultiDict.of(params))
        assert refusal(URL, params, signature, None) is None

    def test_a_sha256_signature_without_the_header_says_what_is_missing(self) -> None:
        """The old "not a base64 HMAC-SHA1" now points at the header a SharedKey request carries."""
        params = call_params(call_sid(5), "ringing", 1)
        reason = refusal(URL, params, sha256_signature(NEW_SECRET, URL, params), None)
        assert reason is not None
        assert "X-Twilio-Webhooks-Signature-Settings" in reason

    def test_header_without_key_or_algorithm_is_the_auth_token(self) -> None:
        """twilio's get_signature_algorithm: no ``algorithm=`` means HMAC-SHA1 (the auth token)."""
        assert parse_settings_header("") == (None, "HMAC_SHA1")
        assert parse_settings_header(" key = k1 , algorithm = hmac_sha256 ") == ("k1", "HMAC_SHA256")

    def test_repr_shows_key_ids_not_secrets(self) -> None:
        assert NEW_SECRET not in repr(KEYS)
        assert NEW_ID in repr(KEYS)


class TestHostCase:
    @pytest.mark.parametrize(
        "signed_url",
        ["https://calls.example.com/twilio/call-status", "https://Calls.Example.com/twilio/call-status"],
    )
    def test_capitals_in_the_configured_host_are_accepted(self, signed_url: str) -> None:
        """PUBLIC_BASE_URL=https://Calls.Example.com: a signature over the lowercase host (what
        twilio-node checks) or over the host as written is accepted."""
        params = call_params(call_sid(6), "ringing", 1)
        signature: str = RequestValidator(TOKEN).compute_signature(signed_url, MultiDict.of(params))
        configured = "https://Calls.Example.com/twilio/call-status"
        assert refusal(configured, params, signature, None) is None

    def test_path_case_still_matters(self) -> None:
        """Only scheme and host are case-insensitive: a path differing in case is refused."""
        params = call_params(call_sid(7), "ringing", 1)
        signature: str = RequestValidator(TOKEN).compute_signature(
            "https://calls.example.com/Twilio/call-status", MultiDict.of(params)
        )
        assert refusal(URL, params, signature, None) == "signature does not match"


class TestSetting:
    def test_keys_are_read_with_rotation(self) -> None:
        settings_ = Settings.from_environ(
            {"TWILIO_SHARED_KEYS": f"{OLD_ID}:{OLD_SECRET}, {NEW_ID}:{NEW_SECRET}"}
        )
        assert dict(settings_.shared_keys) == {OLD_ID: OLD_SECRET, NEW_ID: NEW_SECRET}
        assert OLD_SECRET not in repr(settings_)

    @pytest.mark.parametrize("raw", ["nocolon", f"{OLD_ID}:", f"bad id:{OLD_SECRET}", f"k:{OLD_SECRET},k:x"])
    def test_malformed_keys_are_refused_without_echoing_a_secret(self, raw: str) -> None:
        with pytest.raises(ConfigError) as raised:
            Settings.from_environ({"TWILIO_SHARED_KEYS": raw})
        assert raised.value.variable == "TWILIO_SHARED_KEYS"
        assert OLD_SECRET not in str(raised.value)


@pytest.fixture
def client(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The app behind PUBLIC_BASE_URL=https://Calls.Example.com, with two SharedKeys."""
    app = create_app(
        Settings(
            redis_url=redis_server.url,
            auth_token=TOKEN,
            shared_keys={OLD_ID: OLD_SECRET, NEW_ID: NEW_SECRET},
            public_base_url="https://Calls.Example.com",
        )
    )
    with TestClient(app) as started:
        yield started


def send(client: TestClient, params: list[tuple[str, str]], headers: dict[str, str]) -> Any:
    body = urlencode(params).encode()
    headers = {"content-type": "application/x-www-form-urlencoded", **headers}
    return client.post("/twilio/call-status", content=body, headers=headers)


class TestOverHttp:
    @OVER_HTTP
    @given(st.sampled_from([OLD_ID, NEW_ID]), st.integers(0, 2**32))
    def test_sharedkey_callbacks_are_queued(
        self, client: TestClient, redis_client: redis.Redis, key_id: str, n: int
    ) -> None:
        """Signed by the oracle with either key of a rotation, over the lowercase public URL:
        204, and the event is queued."""
        redis_client.flushall()
        secret = {OLD_ID: OLD_SECRET, NEW_ID: NEW_SECRET}[key_id]
        params = call_params(call_sid(n), "ringing", 1)
        signature = sha256_signature(secret, URL, params)
        answer = send(
            client,
            params,
            {"x-twilio-signature": signature, "x-twilio-webhooks-signature-settings": header(key_id)},
        )
        assert answer.status_code == 204, answer.text
        assert [Event.from_wire(event).call_sid for event in queued_events(redis_client)] == [call_sid(n)]

    def test_unknown_key_is_a_403_that_says_so_and_stores_nothing(
        self, client: TestClient, redis_client: redis.Redis
    ) -> None:
        params = call_params(call_sid(8), "ringing", 1)
        answer = send(
            client,
            params,
            {
                "x-twilio-signature": sha256_signature("other", URL, params),
                "x-twilio-webhooks-signature-settings": header("webhooks_sharedkey_x"),
            },
        )
        assert answer.status_code == 403
        assert "names key 'webhooks_sharedkey_x', which TWILIO_SHARED_KEYS does not hold" in answer.text
        assert queued_events(redis_client) == []
