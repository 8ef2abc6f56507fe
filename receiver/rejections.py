"""Why a callback's signature was refused: one log line, now and then, that an operator can act on.

A real callback refused with 403 is almost always a deployment problem, not a forgery: the URL
checked is not the URL Twilio called (a proxy changed the scheme, host, port or path prefix, or
``PUBLIC_BASE_URL`` says something else), or the key is not the one Twilio used. The 403 itself says
only what failed; the ``signature_rejected`` line says which URL was checked and what the likely
cause is, found by trying the URLs the request could have been signed for (:func:`likely_cause`).

That search costs a few HMACs, and a flood of forgeries must cost neither CPU nor log volume, so
:class:`RejectionLog` writes at most one line per interval (the line counts the refusals it did not
describe) and diagnoses only when it writes. Nothing here runs for an accepted callback. No line
holds a token, a secret, a signature or the query string (a GET callback carries phone numbers
there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from starlette.types import Scope

from callstate.errors import InvalidSignature
from callstate.logs import log_event
from receiver.publicurl import TrustedProxies, public_url
from receiver.signature import Keyring, verify

logger = logging.getLogger("callstate.web")

#: Seconds between two ``signature_rejected`` lines of one process.
INTERVAL: Final = 10.0

_EVERYONE: Final = TrustedProxies(everyone=True)
_NOBODY: Final = TrustedProxies()


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a refused callback was checked with: enough to try other URLs, nothing more."""

    scope: Scope
    #: The URL that was checked (the public URL as configured or derived).
    url: str
    base: str | None
    trusted: TrustedProxies
    keyring: Keyring
    signed: Sequence[tuple[str, str]]
    signature: str
    account_sid: str | None
    signature_settings: str | None


def redact(url: str) -> str:
    """``url`` without its query (phone numbers in a GET callback) or fragment."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i != -1), default=len(url))
    return url[:cut] + ("?..." if cut < len(url) and url[cut] == "?" else "")


def likely_cause(error: InvalidSignature, attempt: Attempt | None) -> str:
    """The most likely reason a callback was refused, in words an operator can act on.

    ``attempt`` is ``None`` when the request was refused before a URL was checked (no signature
    header, parameters that cannot be decoded). Otherwise the URLs the request may have been
    signed for are tried in turn: the one its own ``Host`` and forwarded headers describe, the
    checked URL with the other scheme, with a trailing slash toggled. A match names the part that
    differs; no match leaves the key or a forgery.
    """
    code, reason = error.code, error.reason
    if code == "undecodable":
        return f"the parameters cannot be decoded ({reason}): not sent by Twilio"
    if code in ("unknown_key", "unknown_algorithm"):
        return "signed with a Webhook SharedKey that TWILIO_SHARED_KEYS lacks: add <key id>:<secret>"
    if code == "malformed":
        return "the signature is not of the algorithm its headers imply: not sent by Twilio"
    if attempt is None or code == "missing":
        return "no X-Twilio-Signature header: not sent by Twilio, or a proxy dropped the header"
    for candidate, explain in _candidates(attempt):
        if candidate != attempt.url and _matches(attempt, candidate):
            return f"the signature matches {redact(candidate)}: {explain}"
    return (
        "no URL variant matches: the auth token or key is not the one Twilio used (TWILIO_AUTH_TOKEN, "
        "TWILIO_AUTH_TOKEN_PREVIOUS during a rotation, TWILIO_SUBACCOUNT_TOKENS, TWILIO_SHARED_KEYS), "
        "or the URL Twilio called differs in a way not guessed (a path prefix the proxy strips "
        "belongs in PUBLIC_BASE_URL), or the request is forged"
    )


def _candidates(attempt: Attempt) -> list[tuple[str, str]]:
    """Other URLs to try, each with what it would mean if the signature matched it."""
    setting = "PUBLIC_BASE_URL" if attempt.base is not None else "the URL derived from the request"
    forwarded = public_url(attempt.scope, None, _EVERYONE)
    direct = public_url(attempt.scope, None, _NOBODY)
    candidates = [
        (
            forwarded,
            f"{setting} differs from what the proxy forwards in {_differences(attempt.url, forwarded)}",
        ),
        (direct, f"{setting} differs from the request's own URL in {_differences(attempt.url, direct)}"),
    ]
    if attempt.base is None and forwarded != direct:
        peer = (attempt.scope.get("client") or ("?",))[0]
        candidates.insert(
            0,
            (
                forwarded,
                f"the proxy at {peer} is not in FORWARDED_ALLOW_IPS, so its X-Forwarded-* were ignored",
            ),
        )
    scheme, _, rest = attempt.url.partition("://")
    other = "http" if scheme.lower() == "https" else "https"
    candidates.append((f"{other}://{rest}", f"Twilio called {other}://, not {scheme}://"))
    path_end = min((i for i in (rest.find("?"),) if i != -1), default=len(rest))
    path, query = rest[:path_end], rest[path_end:]
    toggled = path[:-1] if path.endswith("/") else path + "/"
    candidates.append((f"{scheme}://{toggled}{query}", "the path differs by a trailing slash"))
    return candidates


def _differences(checked: str, called: str) -> str:
    """Which of scheme, host, port and path prefix differ between two URLs."""
    a, b = urlsplit(checked), urlsplit(called)
    parts = []
    if a.scheme.lower() != b.scheme.lower():
        parts.append(f"scheme ({a.scheme} here, {b.scheme} called)")
    if (a.hostname or "") != (b.hostname or ""):
        parts.append(f"host ({a.hostname} here, {b.hostname} called)")
    try:
        ports = (a.port, b.port)
    except ValueError:
        ports = (None, None)
    if ports[0] != ports[1]:
        parts.append(f"port ({ports[0] or 'default'} here, {ports[1] or 'default'} called)")
    if a.path != b.path:
        parts.append(f"path ({a.path} here, {b.path} called: a path prefix?)")
    return ", ".join(parts) or "nothing visible"


def _matches(attempt: Attempt, url: str) -> bool:
    try:
        verify(
            attempt.keyring,
            url,
            attempt.signed,
            attempt.signature,
            account_sid=attempt.account_sid,
            signature_settings=attempt.signature_settings,
        )
    except InvalidSignature:
        return False
    return True


class RejectionLog:
    """Writes a ``signature_rejected`` line for a refused callback, at most one per ``interval``
    seconds of ``clock``; the line's ``suppressed`` field counts the refusals since the last line.
    Thread-safe; ``report`` costs a lock and a clock read when it does not write."""

    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._suppressed = 0

    def report(self, error: InvalidSignature, attempt: Attempt | None) -> bool:
        """Log why ``error`` happened, unless a line was written less than ``interval`` ago.
        Returns whether it wrote."""
        with self._lock:
            now = self.clock()
            if now < self._next:
                self._suppressed += 1
                return False
            self._next = now + self.interval
            suppressed, self._suppressed = self._suppressed, 0
        log_event(
            logger,
            "signature_rejected",
            logging.WARNING,
            url=None if attempt is None else redact(attempt.url),
            reason=error.reason,
            cause=likely_cause(error, attempt),
            suppressed=suppressed,
        )
        return True
