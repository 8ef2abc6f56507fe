"""Tests of receiver.signature against docs/twilio.md, "Signature vectors", and the twilio package."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlparse

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator, add_port, remove_port

from callstate.errors import InvalidSignature
from receiver.form import parse_form
from receiver.signature import Keyring, compute_signature, url_variants, verify, verify_body
from tests.twiliosign import MultiDict
from tests.vectors import P_20, URL_20

# Deterministic runs, nothing written to .hypothesis/.
ORACLE = settings(max_examples=150, derandomize=True, database=None)

# The shared inputs of docs/twilio.md, "Signature vectors".
TOKEN = "12345"
KEYS = Keyring(TOKEN)
U = "https://mycompany.com/myapp.php?foo=1&bar=2"
P = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
]
SIG_1 = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
BODY_8 = b'{"property": "value", "boolean": true}'
SHA_8 = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
SHA_11 = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EXTRAS_15 = [("ReasonConferenceEnded", "test"), ("Reason", "Participant")]
P_18 = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
URL_21 = (
    "https://example.com/twilio/status?tenant=acme&AccountSid=AC00000000000000000000000000000000"
    "&ApiVersion=2010-04-01&CallSid=CA11111111111111111111111111111111&CallStatus=completed"
    "&CallDuration=42&Called=%2B15005550006&CalledCity=&Caller=%2B15005550001"
    "&CallbackSource=call-progress-events&Direction=outbound-api&From=%2B15005550001&SequenceNumber=3"
    "&SipResponseCode=200&Timestamp=Tue%2C+01+Sep+2026+12%3A00%3A00+%2B0000&To=%2B15005550006"
    "&ToCountry=US"
)


def accepts(url: str, params: list[tuple[str, str]], signature: str, keys: Keyring = KEYS) -> bool:
    """Whether verify() accepts the request (it raises InvalidSignature otherwise)."""
    try:
        verify(keys, url, params, signature)
    except InvalidSignature:
        return False
    return True


def accepts_body(url: str, body: bytes, signature: str, keys: Keyring = KEYS) -> bool:
    """Whether verify_body() accepts the request."""
    try:
        verify_body(keys, url, body, signature)
    except InvalidSignature:
        return False
    return True


class TestReferenceVectors:
    def test_1_base_vector(self) -> None:
        """#1: the shared URL and params sign to RSOYDt4T... and verify."""
        assert compute_signature(TOKEN, U, P) == SIG_1
        assert accepts(U, P, SIG_1)

    def test_2_explicit_https_port_is_stripped(self) -> None:
        """#2: an https URL with port 1234 accepts the portless signature #1."""
        assert accepts("https://mycompany.com:1234/myapp.php?foo=1&bar=2", P, SIG_1)

    def test_3_https_signed_with_443(self) -> None:
        """#3: a request to U signed over the :443 form verifies."""
        assert compute_signature(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", P) == (
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        )
        assert accepts(U, P, "kvajT1Ptam85bY51eRf/AJRuM3w=")

    def test_4_http_signed_with_80(self) -> None:
        """#4: a request to the http URL signed over the :80 form verifies."""
        assert accepts("http://mycompany.com/myapp.php?foo=1&bar=2", P, "0ZXoZLH/DfblKGATFgpif+LLRf4=")

    def test_5_http_explicit_port_kept(self) -> None:
        """#5: an http URL with port 1234 verifies against its own (with-port) signature."""
        assert accepts("http://mycompany.com:1234/myapp.php?foo=1&bar=2", P, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")

    def test_6_repeated_values_sorted_and_deduplicated(self) -> None:
        """#6: Digits=[5678,1234,1234] signs as Digits1234Digits5678; the undeduplicated form is refused."""
        params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
        params.append(("Digits", "1234"))
        assert compute_signature(TOKEN, U + "Digits1234Digits5678SidCA123SidAccountAC123") == (
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        )
        assert compute_signature(TOKEN, U, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        assert accepts(U, params, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")
        assert not accepts(U, params, "tM//N+MVWOh7+ol2z8YCNxSY0Eg=")

    @pytest.mark.parametrize("order", [["+1325xxxxxxx", "+1415xxxxxxx"], ["+1415xxxxxxx", "+1325xxxxxxx"]])
    def test_7_array_values_in_either_order(self, order: list[str]) -> None:
        """#7: two MessagingBinding.Address values verify whatever their order in the body."""
        params = [("MessagingBinding.Address", value) for value in order]
        assert accepts(U, params, "83O6e2vORAoJHUNzJjDWN1jz+BA=")

    def test_8_body_hash(self) -> None:
        """#8: the JSON body hashes to 0a1ff763...6620."""
        assert hashlib.sha256(BODY_8).hexdigest() == SHA_8

    def test_9_body_with_query(self) -> None:
        """#9: U with bodySHA256 appended verifies with the JSON body and no params."""
        assert accepts_body(U + "&bodySHA256=" + SHA_8, BODY_8, "a9nBmqA0ju/hNViExpshrM61xv4=")

    def test_10_body_hash_as_only_query_parameter(self) -> None:
        """#10: a URL whose only query parameter is bodySHA256 verifies."""
        url = "https://mycompany.com/myapp.php?bodySHA256=" + SHA_8
        assert accepts_body(url, BODY_8, "y77kIzt2vzLz71DgmJGsen2scGs=")

    @pytest.mark.parametrize("signature", ["Ldidvp12m26NI7eqEvxnEpkd9Hc=", "rw/jVviOgicj2+kHZULvebnA4ag="])
    def test_11_empty_json_body_either_port_form(self, signature: str) -> None:
        """#11: body `{}` verifies with both the :443 and the portless signature."""
        assert hashlib.sha256(b"{}").hexdigest() == SHA_11
        assert accepts_body(U + "&bodySHA256=" + SHA_11, b"{}", signature)

    @pytest.mark.parametrize(
        "url",
        [
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            "https://user@mycompany.com/myapp.php?foo=1&bar=2",
        ],
    )
    def test_12_13_userinfo_is_not_signed(self, url: str) -> None:
        """#12/#13: userinfo is dropped, so the plain signature #1 verifies for a URL with credentials."""
        assert accepts(url, P, SIG_1)
        assert accepts(url, P, "kvajT1Ptam85bY51eRf/AJRuM3w=")

    @pytest.mark.parametrize(
        ("signed_url", "signature"),
        [
            ("https://user:pass@mycompany.com/myapp.php?foo=1&bar=2", "CukzLTc1tT5dXEDIHm/tKBanW10="),
            ("https://user:pass@mycompany.com:443/myapp.php?foo=1&bar=2", "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="),
            ("https://user@mycompany.com/myapp.php?foo=1&bar=2", "2YRLlVAflCqxaNicjMpJcSTgzSs="),
        ],
    )
    def test_12_13_signatures_over_userinfo_are_refused(self, signed_url: str, signature: str) -> None:
        """#12/#13: the node-spec signatures hash the credentials, which Twilio never signs; refused."""
        assert compute_signature(TOKEN, signed_url, P) == signature
        assert not accepts(signed_url.replace(":443", ""), P, signature)

    def test_14_query_is_signed_as_received(self) -> None:
        """#14: the query is never re-encoded: %27 and a raw quote are different URLs."""
        escaped = U + "&Body=It%27s+amazing"
        raw = U + "&Body=It's+amazing"
        assert accepts(escaped, P, "TfZzewPq8wqrGlMfyAud8+/IvJ0=")
        assert accepts(raw, P, "dsq4Ehbj6cs+KdTkpF5sSSplOWw=")
        assert not accepts(raw, P, "TfZzewPq8wqrGlMfyAud8+/IvJ0=")
        assert not accepts(escaped, P, "dsq4Ehbj6cs+KdTkpF5sSSplOWw=")

    def test_15_sorted_by_name_then_value(self) -> None:
        """#15: Reason sorts before ReasonConferenceEnded; the name+value sort is refused."""
        assert accepts(U, P + EXTRAS_15, "vOEb5UThFn24KEfnOFLQY2AE5FY=")
        assert not accepts(U, P + EXTRAS_15, "95+Bu0JVPi0r/SsESZCVf0dWAjw=")

    def test_16_http_with_extras(self) -> None:
        """#16: the http URL with the #15 params verifies."""
        assert accepts(
            "http://mycompany.com/myapp.php?foo=1&bar=2", P + EXTRAS_15, "n2xBNyzSW7rfYStDtOFiFMv7qNo="
        )

    def test_17_form_body_through_parse_form(self) -> None:
        """#17: the form body `property=value&boolean=true`, decoded by parse_form, verifies."""
        assert accepts(U, parse_form(b"property=value&boolean=true"), "NBdBDr/T/lgjI+tlgpXjKZQZs/k=")

    def test_18_security_doc_worked_example(self) -> None:
        """#18: the Security doc's example on example.com verifies, with its exact string to sign."""
        url = "https://example.com/myapp.php?foo=1&bar=2"
        to_sign = url + "CallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212"
        assert compute_signature(TOKEN, to_sign) == "L/OH5YylLD5NRKLltdqwSvS0BnU="
        assert accepts(url, P_18, "L/OH5YylLD5NRKLltdqwSvS0BnU=")

    def test_19_api_snippets_example(self) -> None:
        """#19: the #18 params on U verify."""
        assert accepts(U, P_18, "GvWf1cFY/Q7PnoempGyD5oXAezc=")

    @pytest.mark.parametrize("signature", ["cgWxEFeOtGpNX6fRt5+WdFWgmP4=", "l3FZpnnPZMrn8hlx8veZid1PsyE="])
    def test_20_status_callback_both_port_forms(self, signature: str) -> None:
        """#20: a status callback verifies with the portless and the :443 signature."""
        assert accepts(URL_20, P_20, signature)

    def test_20_status_callback_string_to_sign(self) -> None:
        """#20: the string to sign orders names by code point (CallDuration < CallSid < Called)."""
        to_sign = URL_20 + (
            "AccountSidAC00000000000000000000000000000000ApiVersion2010-04-01CallDuration42"
            "CallSidCA11111111111111111111111111111111CallStatuscompletedCallbackSourcecall-progress-events"
            "Called+15005550006CalledCityCaller+15005550001Directionoutbound-apiFrom+15005550001"
            "SequenceNumber3SipResponseCode200TimestampTue, 01 Sep 2026 12:00:00 +0000"
            "To+15005550006ToCountryUS"
        )
        assert compute_signature(TOKEN, to_sign) == compute_signature(TOKEN, URL_20, P_20)

    def test_20_non_default_port(self) -> None:
        """#20: on https://example.com:8443 both the URL as is and the portless signature verify."""
        url = "https://example.com:8443/twilio/status?tenant=acme"
        assert accepts(url, P_20, "+gWI/hAG7XgvQXNDI67UVVl84Qc=")
        assert accepts(url, P_20, "cgWxEFeOtGpNX6fRt5+WdFWgmP4=")
        assert not accepts(url, P_20, "l3FZpnnPZMrn8hlx8veZid1PsyE=")

    @pytest.mark.parametrize("signature", ["cgWxEFeOtGpNX6fRt5+WdFWgmP4=", "l3FZpnnPZMrn8hlx8veZid1PsyE="])
    def test_20_http_is_refused(self, signature: str) -> None:
        """#20: the scheme is signed, so the http:// URL refuses the https signatures."""
        assert not accepts("http://example.com/twilio/status?tenant=acme", P_20, signature)

    def test_21_get_request(self) -> None:
        """#21: the GET form, full URL and no params, verifies; the same params again would not."""
        assert accepts(URL_21, [], "Q3yNs601AJdsJ0f6ifvUF5m+vpo=")
        assert not accepts(URL_21, P_20, "Q3yNs601AJdsJ0f6ifvUF5m+vpo=")


class TestUrlVariants:
    @pytest.mark.parametrize(
        ("url", "variants"),
        [
            ("https://a.com/p?q=1", ("https://a.com/p?q=1", "https://a.com:443/p?q=1")),
            ("http://a.com/p", ("http://a.com/p", "http://a.com:80/p")),
            ("https://a.com:443/p", ("https://a.com/p", "https://a.com:443/p")),
            ("https://a.com:8443/p", ("https://a.com/p", "https://a.com:8443/p")),
            ("http://a.com:80", ("http://a.com", "http://a.com:80")),
            ("https://a.com?x=1:2", ("https://a.com?x=1:2", "https://a.com:443?x=1:2")),
            ("https://u:p@a.com:99/p", ("https://a.com/p", "https://a.com:99/p")),
            ("https://u@x:p@a.com/p", ("https://a.com/p", "https://a.com:443/p")),
            ("https://[::1]:8443/p", ("https://[::1]/p", "https://[::1]:8443/p")),
            ("https://[::1]/p", ("https://[::1]/p", "https://[::1]:443/p")),
            ("wss://a.com/s", ("wss://a.com/s", "wss://a.com:80/s")),
            # Scheme and host lowercase first (twilio-node), then as given; the path keeps its case.
            (
                "HTTPS://A.com/P",
                ("https://a.com/P", "https://a.com:443/P", "HTTPS://A.com/P", "HTTPS://A.com:443/P"),
            ),
            (
                "https://a.com/p?b=2&a=%2B+x#frag",
                ("https://a.com/p?b=2&a=%2B+x", "https://a.com:443/p?b=2&a=%2B+x"),
            ),
            ("/relative?x=1", ("/relative?x=1",)),
        ],
    )
    def test_variants(self, url: str, variants: tuple[str, ...]) -> None:
        """Portless first, then with the explicit or default port; userinfo and fragment dropped."""
        assert url_variants(url) == variants


class TestVerify:
    def test_missing_header_is_refused(self) -> None:
        """No header gives a reason saying it is missing."""
        with pytest.raises(InvalidSignature, match="X-Twilio-Signature header is missing"):
            verify(KEYS, U, P, None)

    def test_empty_header_is_refused(self) -> None:
        """An empty header gives a reason saying it is empty."""
        with pytest.raises(InvalidSignature, match="X-Twilio-Signature header is empty"):
            verify(KEYS, U, P, "")

    @pytest.mark.parametrize(
        "signature", ["x", SIG_1 + "=", "Q3yNs601AJdsJ0f6ifvUF5m+vpo=" * 2, "é" * 28 + "x"]
    )
    def test_header_of_wrong_length_is_refused(self, signature: str) -> None:
        """A value that cannot be a base64 HMAC-SHA1 (e.g. an HMAC-SHA256) is refused as such."""
        with pytest.raises(InvalidSignature, match="not a base64 HMAC-SHA1"):
            verify(KEYS, U, P, signature)

    def test_non_ascii_header_is_refused_without_error(self) -> None:
        """A 28-character header with non-ASCII characters is simply a mismatch."""
        with pytest.raises(InvalidSignature, match="signature does not match"):
            verify(KEYS, U, P, "é" * 28)

    def test_wrong_signature_reason_holds_no_secret(self) -> None:
        """A mismatch says so, without the token or the expected signature."""
        token = "secret-token-value"
        with pytest.raises(InvalidSignature) as info:
            verify(Keyring(token), U, P, SIG_1)
        assert info.value.reason == "signature does not match"
        assert token not in str(info.value)
        assert compute_signature(token, U, P) not in str(info.value)

    def test_mapping_params_equal_pairs(self) -> None:
        """A plain dict of params is signed like the list of its items."""
        assert compute_signature(TOKEN, U, dict(P)) == SIG_1
        assert accepts(U, P, SIG_1)
        verify(KEYS, U, dict(P), SIG_1)

    def test_fragment_is_not_signed(self) -> None:
        """A fragment on the URL is ignored."""
        assert accepts(U + "#rc=5&ct=1000", P, SIG_1)

    def test_lone_surrogate_is_a_mismatch_not_a_crash(self) -> None:
        """Text Twilio could not have signed fails verification instead of raising UnicodeError."""
        assert not accepts(U + "\ud800", [("a", "\udfff")], SIG_1)

    def test_common_case_computes_one_hmac(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A portless https callback signed with the primary token costs exactly one HMAC."""
        copies = count_calls(monkeypatch, hmac.HMAC, "copy")
        verify(Keyring(TOKEN, previous="old-token"), URL_20, P_20, "cgWxEFeOtGpNX6fRt5+WdFWgmP4=")
        assert copies() == 1

    def test_worst_case_tries_each_variant_with_each_token(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A refused request has tried both URL variants with both rotation tokens, nothing more."""
        copies = count_calls(monkeypatch, hmac.HMAC, "copy")
        assert not accepts(URL_20, P_20, SIG_1, Keyring(TOKEN, previous="old-token"))
        assert copies() == 4


class TestVerifyBody:
    def test_missing_body_hash_is_refused(self) -> None:
        """A URL without bodySHA256 is refused with its own reason."""
        with pytest.raises(InvalidSignature, match="URL has no bodySHA256 parameter"):
            verify_body(KEYS, U, BODY_8, SIG_1)

    def test_body_that_does_not_match_its_hash_is_refused(self) -> None:
        """A correctly signed URL with a different body is refused as a body mismatch."""
        with pytest.raises(InvalidSignature, match="body does not match its bodySHA256"):
            verify_body(KEYS, U + "&bodySHA256=" + SHA_8, b"{}", "a9nBmqA0ju/hNViExpshrM61xv4=")

    def test_wrong_signature_with_right_body_is_refused(self) -> None:
        """A matching body does not excuse a wrong signature."""
        with pytest.raises(InvalidSignature, match="signature does not match"):
            verify_body(KEYS, U + "&bodySHA256=" + SHA_8, BODY_8, SIG_1)

    def test_missing_header_is_refused(self) -> None:
        """No header is reported before anything else."""
        with pytest.raises(InvalidSignature, match="header is missing"):
            verify_body(KEYS, U, BODY_8, None)

    def test_first_body_hash_counts(self) -> None:
        """With bodySHA256 repeated, the first value is checked, as the official libraries do."""
        url = U + "&bodySHA256=" + SHA_8 + "&bodySHA256=" + SHA_11
        assert accepts_body(url, BODY_8, compute_signature(TOKEN, url))
        assert not accepts_body(url, b"{}", compute_signature(TOKEN, url))


def signed_by(token: str) -> str:
    """The signature of the shared request (U, P) under ``token``."""
    return compute_signature(token, U, P)


def verifies(keys: Keyring, token: str, account_sid: str | None = None) -> bool:
    """Whether verify(), the production path, accepts (U, P) signed with ``token``."""
    try:
        verify(keys, U, P, signed_by(token), account_sid=account_sid)
    except InvalidSignature:
        return False
    return True


class TestKeyring:
    def test_subaccount_token_is_used_for_its_account(self) -> None:
        """A listed AccountSid is checked with its own token, and only that token."""
        keys = Keyring("main-token", previous="old-token", subaccounts={"AC1": "sub-token"})
        assert verifies(keys, "sub-token", account_sid="AC1")
        assert not verifies(keys, "main-token", account_sid="AC1")
        assert not verifies(keys, "old-token", account_sid="AC1")

    def test_previous_token_is_accepted_during_rotation(self) -> None:
        """Both the new primary and the previous token verify while a rotation settles."""
        keys = Keyring("new-token", previous="old-token")
        assert verifies(keys, "new-token")
        assert verifies(keys, "old-token")
        assert not verifies(keys, "other-token")

    def test_previous_token_is_refused_without_rotation(self) -> None:
        """Without ``previous`` only the primary token verifies."""
        assert verifies(Keyring("new-token"), "new-token")
        assert not verifies(Keyring("new-token"), "old-token")

    def test_unknown_account_falls_back_to_primary(self) -> None:
        """An AccountSid not listed (or none) is checked with the primary token, not a subaccount's."""
        keys = Keyring("main-token", subaccounts={"AC1": "sub-token"})
        for account in ("AC2", None):
            assert verifies(keys, "main-token", account_sid=account)
            assert not verifies(keys, "sub-token", account_sid=account)

    def test_previous_equal_to_primary_is_tried_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A previous token equal to the primary adds nothing: a mismatch costs one HMAC per URL
        variant, as without it."""
        copies = count_calls(monkeypatch, hmac.HMAC, "copy")
        assert not verifies(Keyring("t", previous="t"), "other-token")
        assert copies() == len(url_variants(U))

    @pytest.mark.parametrize(
        "kwargs",
        [{"primary": ""}, {"primary": "t", "previous": ""}, {"primary": "t", "subaccounts": {"AC1": ""}}],
    )
    def test_empty_token_is_rejected(self, kwargs: dict[str, Any]) -> None:
        """An empty token is a configuration mistake, refused at construction."""
        with pytest.raises(ValueError, match="empty"):
            Keyring(**kwargs)

    def test_repr_hides_tokens(self) -> None:
        """The repr names the subaccounts but shows no token."""
        text = repr(Keyring("main-token", previous="old-token", subaccounts={"AC1": "sub-token"}))
        assert "AC1" in text
        assert not any(token in text for token in ("main-token", "old-token", "sub-token"))

    def test_is_frozen(self) -> None:
        """Neither the fields nor the subaccount mapping can be changed after construction."""
        subaccounts = {"AC1": "sub-token"}
        keys = Keyring("t", subaccounts=subaccounts)
        subaccounts["AC1"] = "changed"
        assert verifies(keys, "sub-token", account_sid="AC1")
        assert not verifies(keys, "changed", account_sid="AC1")
        with pytest.raises(dataclasses.FrozenInstanceError):
            keys.primary = "x"  # type: ignore[misc]
        with pytest.raises(TypeError):
            keys.subaccounts["AC1"] = "x"  # type: ignore[index]


# --- Property tests with the official twilio package as the oracle -------------------------------------

# Names from a small pool so that repeats are common, plus arbitrary ones.
NAMES = st.one_of(
    st.sampled_from(["CallSid", "Digits", "Called", "Caller", "called", ""]), st.text(max_size=6)
)
VALUES = st.text(
    st.one_of(st.sampled_from(list("+&=% #?é😀𝄞\x00")), st.characters(codec="utf-8")),
    max_size=10,
)
PARAMS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
TOKENS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
SEGMENT = st.text("abcXYZ019-._~", min_size=1, max_size=6)


@st.composite
def urls(draw: st.DrawFn) -> str:
    """Absolute URLs such as Twilio calls: http(s), optional port, a path and a query string."""
    scheme = draw(st.sampled_from(["https", "http"]))
    host = draw(st.sampled_from(["example.com", "a.b.example.org", "localhost", "10.0.0.1"]))
    port = draw(st.none() | st.integers(1, 65535).map(str))
    path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=3)))
    query_pairs = draw(st.lists(st.tuples(SEGMENT, VALUES), max_size=3))
    quote_via = draw(st.sampled_from([quote, quote_plus]))
    query = urlencode(query_pairs, quote_via=quote_via)
    return f"{scheme}://{host}{'' if port is None else ':' + port}{path}{'?' + query if query else ''}"


def signed_text(pairs: list[tuple[str, str]]) -> str:
    """The parameter part of the string to sign, written out plainly (docs/twilio.md, "Sorting and
    repeated names").

    Twilio's scheme has no delimiters, so different params can give the same text (``("", "")`` adds
    nothing; ``("ab", "")`` reads like ``("a", "b")``); a mutation only has to be refused when it
    changes this text.
    """
    return "".join(name + value for name, value in sorted(set(pairs)))


def twilio_signature(token: str, url: str, pairs: list[tuple[str, str]], port_form: str) -> str:
    """Sign as Twilio's server would: over the URL as is, or twilio's own portless / with-port form."""
    parsed = urlparse(url)
    signed_url = {"as-is": url, "without": remove_port(parsed), "with": add_port(parsed)}[port_form]
    signature: str = RequestValidator(token).compute_signature(signed_url, MultiDict.of(pairs))
    return signature


def twilio_accepts(token: str, url: str, pairs: list[tuple[str, str]], signature: str) -> bool:
    """The official validator's verdict."""
    verdict: bool = RequestValidator(token).validate(url, MultiDict.of(pairs), signature)
    return verdict


PORT_FORMS = st.sampled_from(["as-is", "without", "with"])


class TestAgainstTwilio:
    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS)
    def test_twilio_signatures_verify(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str
    ) -> None:
        """Whatever twilio signs (either port form) verifies, as twilio's own validator agrees."""
        signature = twilio_signature(token, url, pairs, form)
        assert twilio_accepts(token, url, pairs, signature)
        verify(Keyring(token), url, pairs, signature)

    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS)
    def test_posted_body_verifies_after_parse_form(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str
    ) -> None:
        """A body urlencode()d from the signed params, decoded by parse_form, verifies."""
        signature = twilio_signature(token, url, pairs, form)
        verify(Keyring(token), url, parse_form(urlencode(pairs).encode()), signature)

    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS)
    def test_get_request_verifies(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str
    ) -> None:
        """A GET with the params appended to the query verifies with no params."""
        full = (url + ("&" if "?" in url else "?") + urlencode(pairs)) if pairs else url
        verify(Keyring(token), full, (), twilio_signature(token, full, [], form))

    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS, st.data())
    def test_changed_value_is_refused(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str, data: st.DataObject
    ) -> None:
        """Changing one parameter value (so the string to sign changes) is refused, as twilio agrees."""
        assume(pairs)
        signature = twilio_signature(token, url, pairs, form)
        index = data.draw(st.integers(0, len(pairs) - 1))
        changed = list(pairs)
        changed[index] = (pairs[index][0], data.draw(VALUES))
        assume(signed_text(changed) != signed_text(pairs))
        assert not twilio_accepts(token, url, changed, signature)
        assert not accepts(url, changed, signature, Keyring(token))

    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS, st.tuples(NAMES, VALUES))
    def test_added_param_is_refused(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str, extra: tuple[str, str]
    ) -> None:
        """Adding a parameter the signature did not cover is refused."""
        assume(signed_text([*pairs, extra]) != signed_text(pairs))
        signature = twilio_signature(token, url, pairs, form)
        assert not accepts(url, [*pairs, extra], signature, Keyring(token))

    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS, st.sampled_from(["scheme", "host", "path", "query"]))
    def test_changed_url_is_refused(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str, change: str
    ) -> None:
        """Another scheme, host, path or query than the one signed is refused."""
        signature = twilio_signature(token, url, pairs, form)
        changed = {
            "scheme": lambda: (
                url.replace("https://", "http://") if url.startswith("https") else "https" + url[4:]
            ),
            "host": lambda: url.replace("://", "://x", 1),
            "path": lambda: url.replace("?", "/x?") if "?" in url else url + "x",
            "query": lambda: url + ("&" if "?" in url else "?") + "x=1",
        }[change]()
        assert not accepts(changed, pairs, signature, Keyring(token))

    @ORACLE
    @given(TOKENS, urls(), PARAMS, PORT_FORMS)
    def test_other_token_is_refused(
        self, token: str, url: str, pairs: list[tuple[str, str]], form: str
    ) -> None:
        """A signature made with another token is refused."""
        signature = twilio_signature(token + "x", url, pairs, form)
        assert not accepts(url, pairs, signature, Keyring(token))

    @ORACLE
    @given(TOKENS, urls(), PARAMS)
    def test_userinfo_is_ignored(self, token: str, url: str, pairs: list[tuple[str, str]]) -> None:
        """Credentials in the URL do not change what verifies."""
        signature = twilio_signature(token, url, pairs, "as-is")
        verify(Keyring(token), url.replace("://", "://user:p%40ss@", 1), pairs, signature)

    @ORACLE
    @given(TOKENS, urls(), st.text(max_size=40), PORT_FORMS)
    def test_json_body_agrees_with_twilio(self, token: str, url: str, body: str, form: str) -> None:
        """A bodySHA256 URL signed by twilio verifies with its body, and twilio agrees."""
        url += ("&" if "?" in url else "?") + "bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
        signature = twilio_signature(token, url, [], form)
        assert RequestValidator(token).validate(url, body, signature)
        verify_body(Keyring(token), url, body.encode(), signature)
        assert not accepts_body(url, body.encode() + b" ", signature, Keyring(token))


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> Callable[[], int]:
    """Wrap ``owner.name`` to count its calls; returns a function reading the count."""
    original = getattr(owner, name)
    calls = 0

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return lambda: calls
