"""Sign requests the way Twilio does, with the official `twilio` package as an independent oracle.

Nothing here uses callstate's own signature code: a bug there cannot hide behind a matching bug in
the test's signing.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

TOKEN = "test-auth-token-0123456789abcdef"


class MultiDict(dict[str, list[str]]):
    """What the twilio validator reads repeated names from (it calls ``getlist``, as on a
    werkzeug MultiDict or Django's QueryDict)."""

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, str]]) -> MultiDict:
        grouped = cls()
        for name, value in pairs:
            grouped.setdefault(name, []).append(value)
        return grouped

    def getlist(self, name: str) -> list[str]:
        return self[name]


ACCOUNT = "AC" + "a" * 32


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def signature(url: str, params: Sequence[tuple[str, str]] = (), token: str = TOKEN) -> str:
    """What Twilio puts in X-Twilio-Signature for a POST of ``params`` to ``url`` (or a GET of
    ``url`` with ``params=()``). Repeated names go to the oracle as lists, as it expects."""
    result: str = RequestValidator(token).compute_signature(url, MultiDict.of(params))
    return result


def form_request(
    url: str, params: Sequence[tuple[str, str]], token: str = TOKEN
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a signed POST callback."""
    return urlencode(params).encode(), {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": signature(url, params, token),
    }


def get_url(url: str, params: Sequence[tuple[str, str]]) -> str:
    """The URL Twilio requests for a GET callback: ours, then its parameters (docs/twilio.md, "GET
    requests")."""
    joiner = "&" if "?" in url else "?"
    return url + joiner + urlencode(params)


#: Unix seconds of 2026-09-01T12:00:00Z, the time call_params() callbacks are from (plus the
#: sequence number, in seconds). A store that should index them as it would live runs at this time
#: (index scores stay within a day of processing time).
CALLED_AT = 1_788_264_000.0


def call_params(sid: str, status: str, sequence: int | None = 0, **extra: str) -> list[tuple[str, str]]:
    """A realistic StatusCallback body."""
    params = [
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", sid),
        ("CallStatus", status),
        ("Called", "+15005550006"),
        ("Caller", "+15005550001"),
        ("CallbackSource", "call-progress-events"),
        ("Direction", "outbound-api"),
        ("From", "+15005550001"),
        ("To", "+15005550006"),
        ("Timestamp", f"Tue, 01 Sep 2026 12:00:{sequence or 0:02d} +0000"),
    ]
    if sequence is not None:
        params.append(("SequenceNumber", str(sequence)))
    params += list(extra.items())
    return params
