"""A client for the one Twilio REST request callstate makes: fetch a Call resource.

``GET {TWILIO_API_BASE}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic auth
(docs/twilio.md, "The REST Call resource"). The stuck-call sweep (:mod:`workers.sweep`) uses it to
learn how a call ended when its terminal callback never arrived.

Credentials, best first: an API key (``TWILIO_API_KEY_SID`` + secret), else the account SID and its
auth token. Either belongs to the main account and also reads its subaccounts' calls with the
subaccount SID in the path (same section); a subaccount's own token
(``TWILIO_SUBACCOUNT_TOKENS``) is used only for that subaccount's calls when no main credentials are
configured.

Standard library only (``urllib.request``). Every failure is a :class:`TwilioAPIError` whose
attributes say whether to retry; its message never holds a credential or a phone number.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from callstate.errors import CallstateError, ConfigError
from callstate.event import ACCOUNT_SID, CALL_SID
from callstate.settings import Settings

#: Seconds for the connection and for each read. Twilio answers a fetch in well under a second;
#: a sweep makes at most ``sweep_limit`` requests and stops at the first timeout, so a short value
#: bounds how long one sweep can hang on a sick network.
DEFAULT_TIMEOUT: Final = 5.0

#: A Call resource is about 2 KiB; anything far bigger is not one and is not read into memory.
_MAX_BODY: Final = 256 * 1024

_USER_AGENT: Final = "callstate-sweep/1"


class TwilioAPIError(CallstateError):
    """A REST request that gave no usable Call resource.

    ``status`` is the HTTP status, or ``None`` when there was no HTTP answer (timeout, refused
    connection) or the answer was unreadable. ``reason`` is short and safe to log: it never holds a
    credential or a phone number. ``retry_after`` is Twilio's ``Retry-After`` on a 429, in seconds.
    """

    def __init__(self, status: int | None, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"Twilio REST: {reason}" + (f" (HTTP {status})" if status else ""))
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    @property
    def not_found(self) -> bool:
        """Twilio does not know the call (404): deleted, never created, or of another account."""
        return self.status == 404

    @property
    def rate_limited(self) -> bool:
        """Twilio asked us to slow down (429)."""
        return self.status == 429

    @property
    def transient(self) -> bool:
        """Worth retrying later: 429, 5xx, a timeout or a failed connection."""
        if self.status is None:
            return self.reason.startswith(_NETWORK)
        return self.status == 429 or self.status >= 500

    @property
    def credentials(self) -> bool:
        """The credentials were refused (401) or do not allow this request (403)."""
        return self.status in (401, 403)


_NETWORK: Final = ("timeout", "connection failed")


@dataclass(frozen=True, slots=True)
class Credentials:
    """HTTP Basic credentials; the secret stays out of ``repr``."""

    username: str
    password: str = field(repr=False)

    def header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The Calls API never redirects; following one would send the Basic credentials to wherever the
    ``Location`` points (urllib copies the Authorization header), so a 3xx is an error instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class TwilioAPI:
    """Fetches Call resources. Thread-safe (no state besides its configuration)."""

    def __init__(
        self,
        base_url: str = "https://api.twilio.com",
        *,
        account_sid: str = "",
        auth_token: str = "",
        api_key_sid: str = "",
        api_key_secret: str = "",
        subaccount_tokens: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("TWILIO_API_BASE", "must be an absolute http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Basic auth over plain HTTP hands the credentials to the network; only a local test
            # server or proxy may be reached that way.
            raise ConfigError("TWILIO_API_BASE", "must use https unless it is a loopback address")
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.timeout = timeout
        self._main: Credentials | None = None
        if api_key_sid and api_key_secret:
            self._main = Credentials(api_key_sid, api_key_secret)
        elif account_sid and auth_token:
            self._main = Credentials(account_sid, auth_token)
        self._own = {sid: Credentials(sid, token) for sid, token in (subaccount_tokens or {}).items()}
        self._opener = urllib.request.build_opener(_NoRedirect())

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> TwilioAPI | None:
        """The client the settings describe, or ``None`` when they hold no REST credentials."""
        api = cls(
            settings.twilio_api_base,
            account_sid=settings.account_sid,
            auth_token=settings.auth_token,
            api_key_sid=settings.api_key_sid,
            api_key_secret=settings.api_key_secret,
            subaccount_tokens=settings.subaccount_tokens,
            timeout=timeout,
        )
        return api if api.configured else None

    @property
    def configured(self) -> bool:
        """Whether any credentials are set at all."""
        return self._main is not None or bool(self._own)

    def __repr__(self) -> str:
        return f"TwilioAPI({self.base_url!r}, account_sid={self.account_sid!r})"

    def credentials_for(self, account_sid: str) -> Credentials | None:
        """The credentials to read ``account_sid``'s calls with, or ``None`` if there are none."""
        return self._main or self._own.get(account_sid)

    def fetch_call(self, account_sid: str, call_sid: str) -> dict[str, Any]:
        """The Call resource ``call_sid`` of account ``account_sid``, as parsed JSON.

        Raises :class:`ValueError` for a malformed SID (nothing is sent), :class:`TwilioAPIError`
        for anything but a 200 with a JSON object.
        """
        if not ACCOUNT_SID.fullmatch(account_sid) or not CALL_SID.fullmatch(call_sid):
            raise ValueError("account_sid and call_sid must be Twilio SIDs")
        credentials = self.credentials_for(account_sid)
        if credentials is None:
            raise TwilioAPIError(None, "no credentials for this account")
        # The scheme is http(s), checked in __init__.
        request = urllib.request.Request(  # noqa: S310
            f"{self.base_url}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
            headers={
                "Authorization": credentials.header(),
                "Accept": "application/json",
                "User-Agent": _USER_AGENT,
            },
            method="GET",
        )
        body = self._get(request)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise TwilioAPIError(None, "malformed JSON") from None
        if not isinstance(data, dict):
            raise TwilioAPIError(None, "answer is not a JSON object")
        return data

    def _get(self, request: urllib.request.Request) -> bytes:
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body: bytes = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            with exc:  # an HTTPError holds the open response: close it
                raise _http_error(exc.code, exc.headers) from None
        except TimeoutError:
            raise TwilioAPIError(None, "timeout") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise TwilioAPIError(None, "timeout") from None
            raise TwilioAPIError(None, f"connection failed: {type(exc.reason).__name__}") from None
        except (OSError, http.client.HTTPException) as exc:
            # A reset or truncated answer mid-read (RemoteDisconnected, IncompleteRead, ...).
            raise TwilioAPIError(None, f"connection failed: {type(exc).__name__}") from None
        if len(body) > _MAX_BODY:
            raise TwilioAPIError(None, "answer too large")
        return body


def _http_error(status: int, headers: Message) -> TwilioAPIError:
    if status == 404:
        return TwilioAPIError(status, "call not found")
    if status == 429:
        return TwilioAPIError(status, "rate limited", _retry_after(headers.get("Retry-After")))
    if status in (401, 403):
        return TwilioAPIError(status, "credentials refused")
    if status >= 500:
        return TwilioAPIError(status, "server error")
    return TwilioAPIError(status, "unexpected answer")


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from Twilio, and the next sweep is soon anyway
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
