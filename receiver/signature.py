"""X-Twilio-Signature, checked exactly as Twilio computes it.

This module owns the request-signing contract (docs/contracts.md, "Signature rules"): the string to sign
(the public URL, then the decoded form parameters), the URL variants every official validator tries, the
key ring of auth tokens (primary, previous during a rotation, per-subaccount) and of Webhook SharedKeys
(HMAC-SHA256, named by the ``X-Twilio-Webhooks-Signature-Settings`` header: docs/twilio.md, "SharedKey
signatures"), and the ``bodySHA256`` check of JSON webhooks. Twilio's rules and their sources are in
docs/twilio.md, "The signature algorithm"; its vectors (docs/twilio.md, "Signature vectors") are in
``tests/receiver/test_signature.py``, with the official ``twilio`` package as a test-only oracle. Pure
and stdlib-only: the caller supplies the public URL, the decoded parameters
(:func:`receiver.form.parse_form`) and the header values.

Speed: the parameter part of the string to sign is built once per request and shared by every URL
variant and token, and HMAC keys are derived once per :class:`Keyring`. A callback signed the usual way
(HTTPS URL without a port, current token or the SharedKey it names) costs one HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from callstate.errors import InvalidSignature
from callstate.paramnames import signed_concatenation

SIGNATURE_HEADER = "X-Twilio-Signature"
#: Names the SharedKey and algorithm of a request signed with a Webhook SharedKey (docs/twilio.md,
#: "SharedKey signatures"): ``key=<key id>,algorithm=HMAC_SHA256``. Without it the request is signed
#: with an auth token.
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"

HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
#: The algorithms Twilio names (twilio-python 9.13 ``_HASH_FUNCTIONS``), with the length of their
#: base64 digests: a header of another length cannot match and is refused before any HMAC.
_ALGORITHMS: Mapping[str, tuple[Callable[[], Any], int]] = MappingProxyType(
    {HMAC_SHA1: (hashlib.sha1, 28), HMAC_SHA256: (hashlib.sha256, 44)}
)
# A key id echoed in a 403 and the log only if it looks like one (it comes from the request).
_PRINTABLE_KEY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")

Params = Iterable[tuple[str, str]] | Mapping[str, str]
"""Decoded form parameters: ``(name, value)`` pairs (repeated names allowed) or a plain mapping."""


def compute_signature(token: str, url: str, params: Params = ()) -> str:
    """Return the base64 HMAC-SHA1 that Twilio sends for ``url`` and ``params`` under ``token``.

    ``url`` is signed exactly as given (no port, userinfo or fragment handling: see
    :func:`url_variants`). For a GET or a JSON webhook pass no params.
    """
    mac = hmac.new(token.encode("utf-8"), _encode(url), hashlib.sha1)
    mac.update(_params_message(params))
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> tuple[str, ...]:
    """Return the URLs a signature may have been computed over: without port, then with port.

    Twilio is inconsistent about ports (docs/twilio.md, "Ports, userinfo and fragments"), so every
    official validator tries the URL with any explicit port removed (also a non-default one), and the
    URL with its port (the explicit one, else ``:443`` for https and ``:80`` for any other scheme). The
    portless form comes first because Twilio signs HTTPS voice callbacks without a port. Userinfo
    (``user:pass@``) is dropped, since Twilio drops it before signing, and so is a fragment, since HTTP
    clients never send one. Path and query string are kept byte for byte: re-encoding or re-sorting the
    query breaks signatures (docs/twilio.md, "Query strings"). Scheme and host are case-insensitive
    (RFC 3986 section 6.2.2.1) and twilio-node lowercases them before signing: the lowercase URL is
    tried first, and only if the URL has capitals there (a ``PUBLIC_BASE_URL`` pasted as
    ``https://Calls.Example.com``) the URL as given too, in case it was signed that way
    (docs/contracts.md, "URL variants"). A URL without ``://`` is returned alone, unchanged (it can only
    fail to match).
    """
    url = url.partition("#")[0]
    scheme, separator, rest = url.partition("://")
    if not separator:
        return (url,)
    authority_end = len(rest)
    for delimiter in "/?":
        position = rest.find(delimiter, 0, authority_end)
        if position != -1:
            authority_end = position
    host = rest[:authority_end].rpartition("@")[2]
    tail = rest[authority_end:]
    lower_scheme, lower_host = scheme.lower(), host.lower()
    if lower_scheme == scheme and lower_host == host:  # the usual case: one pair of variants
        return _port_variants(scheme, host, tail)
    return _port_variants(lower_scheme, lower_host, tail) + _port_variants(scheme, host, tail)


def _port_variants(scheme: str, host: str, tail: str) -> tuple[str, str]:
    """``scheme://host<tail>`` without, then with its port (``host`` may carry one)."""
    if host.startswith("["):
        # An IPv6 literal holds colons of its own; the port, if any, follows the closing bracket.
        bracket = host.find("]") + 1
        hostname, port = host[:bracket], host[bracket + 1 :]
    else:
        hostname, _, port = host.partition(":")
    if not port:
        port = "443" if scheme.lower() == "https" else "80"
    return (f"{scheme}://{hostname}{tail}", f"{scheme}://{hostname}:{port}{tail}")


@dataclass(frozen=True, eq=False)
class Keyring:
    """The auth tokens a request may be signed with, and their HMAC keys, derived once.

    ``primary`` is the account's current auth token. ``previous`` is the token it replaced, accepted
    too while a rotation settles: requests in flight or retried were signed with it. ``subaccounts``
    maps a subaccount's AccountSid to its own auth token: Twilio signs a subaccount's webhooks with
    that token only. (docs/twilio.md, "Tokens: rotation and subaccounts".) ``shared`` maps a Webhook
    SharedKey's id to its secret; a request naming a key in ``X-Twilio-Webhooks-Signature-Settings`` is
    checked against that key alone, with the algorithm the header names (several keys: a rotation).
    Every token and secret must be non-empty (``ValueError`` otherwise). The repr never shows a token
    or a secret.
    """

    primary: str
    previous: str | None = None
    subaccounts: Mapping[str, str] = field(default_factory=dict)
    shared: Mapping[str, str] = field(default_factory=dict)
    _default_keys: tuple[hmac.HMAC, ...] = field(init=False, repr=False)
    _subaccount_keys: Mapping[str, tuple[hmac.HMAC, ...]] = field(init=False, repr=False)
    _shared_keys: Mapping[tuple[str, str], tuple[hmac.HMAC, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tokens = [self.primary, *([] if self.previous is None else [self.previous])]
        tokens += self.subaccounts.values()
        if not all(tokens) or not all(self.shared.values()):
            raise ValueError("an auth token in the keyring is empty")
        object.__setattr__(self, "shared", MappingProxyType(dict(self.shared)))
        object.__setattr__(
            self,
            "_shared_keys",
            MappingProxyType(
                {
                    (key_id, algorithm): (hmac.new(secret.encode("utf-8"), digestmod=digest),)
                    for key_id, secret in self.shared.items()
                    for algorithm, (digest, _) in _ALGORITHMS.items()
                }
            ),
        )
        default = (self.primary,) if self.previous in (None, self.primary) else (self.primary, self.previous)
        # Frozen dataclass: derived fields are set once, here, through object.__setattr__.
        object.__setattr__(self, "subaccounts", MappingProxyType(dict(self.subaccounts)))
        object.__setattr__(self, "_default_keys", tuple(_key(token) for token in default))
        object.__setattr__(
            self,
            "_subaccount_keys",
            MappingProxyType({sid: (_key(token),) for sid, token in self.subaccounts.items()}),
        )

    def __repr__(self) -> str:
        previous = None if self.previous is None else "'***'"
        return (
            f"Keyring(primary='***', previous={previous}, subaccounts={sorted(self.subaccounts)!r}, "
            f"shared={sorted(self.shared)!r})"
        )

    def _shared_keys_for(self, key_id: str | None, algorithm: str) -> tuple[hmac.HMAC, ...]:
        """The pre-keyed HMAC of SharedKey ``key_id`` for ``algorithm`` (callers ``.copy()`` it);
        :class:`InvalidSignature` saying which of the two is unknown otherwise."""
        if algorithm not in _ALGORITHMS:
            raise InvalidSignature(
                f"{SETTINGS_HEADER} names algorithm {_printable(algorithm)}, which callstate does not "
                f"support ({HMAC_SHA256} or {HMAC_SHA1})",
                code="unknown_algorithm",
            )
        if key_id is None:
            raise InvalidSignature(f"{SETTINGS_HEADER} names no key", code="unknown_key")
        keys = self._shared_keys.get((key_id, algorithm))
        if keys is None:
            raise InvalidSignature(
                f"{SETTINGS_HEADER} names key {_printable(key_id)}, which TWILIO_SHARED_KEYS does not hold",
                code="unknown_key",
            )
        return keys

    def tenant(self, account_sid: str | None) -> str | None:
        """The subaccount whose own token verifies a request from ``account_sid`` (that AccountSid
        itself when it is listed), or ``None`` when the main token does. A request verified for a
        tenant may change that tenant's calls only (docs/redis-schema.md, "Tenants")."""
        return account_sid if account_sid is not None and account_sid in self._subaccount_keys else None

    def _keys_for(self, account_sid: str | None) -> tuple[hmac.HMAC, ...]:
        """The pre-keyed HMACs to try for a request from ``account_sid``, in the order they are
        tried: a listed subaccount's token alone; for anything else the primary token, then the
        previous one if set. Callers must ``.copy()`` a key before use."""
        if account_sid is None:
            return self._default_keys
        return self._subaccount_keys.get(account_sid, self._default_keys)


def parse_settings_header(value: str) -> tuple[str | None, str]:
    """``(key id, algorithm)`` of an ``X-Twilio-Webhooks-Signature-Settings`` value such as
    ``key=<id>,algorithm=HMAC_SHA256``. The algorithm is upper-cased, and ``HMAC_SHA1`` when the
    header names none (twilio-python 9.13 ``get_signature_algorithm``); the key id is ``None`` when
    the header names none."""
    key_id: str | None = None
    algorithm = HMAC_SHA1
    for part in value.split(","):
        name, separator, item = part.partition("=")
        name, item = name.strip().lower(), item.strip()
        if separator and item and name == "key":
            key_id = item
        elif separator and item and name == "algorithm":
            algorithm = item.upper()
    return key_id, algorithm


def verify(
    keyring: Keyring,
    url: str,
    params: Params,
    signature: str | None,
    *,
    account_sid: str | None = None,
    signature_settings: str | None = None,
) -> None:
    """Check the ``X-Twilio-Signature`` of a form POST or a GET; return ``None`` if it is Twilio's.

    ``url`` is the public URL Twilio called, query string as received; for a GET it carries Twilio's
    parameters and ``params`` is empty. ``params`` are the decoded form parameters, all of them
    (Twilio adds parameters without notice). ``signature`` is the header value, ``None`` if absent.
    ``account_sid`` (the request's ``AccountSid``) selects the tokens: a listed subaccount's own token
    alone, any other account the primary token, then the previous one. Choosing them from the
    unverified body is safe because the signature covers it.
    ``signature_settings`` is the ``X-Twilio-Webhooks-Signature-Settings`` header, ``None`` if absent:
    when it names a key, that SharedKey and the named algorithm replace the auth tokens and HMAC-SHA1
    (same string to sign: docs/twilio.md, "SharedKey signatures").

    Raises :class:`~callstate.errors.InvalidSignature` when no URL variant and key reproduce the
    signature, or the header names an unknown key or algorithm. The reason never holds a token, a
    secret or the expected signature.
    """
    if signature_settings is None:  # the usual case, kept free of the SharedKey dispatch
        keys, algorithm = keyring._keys_for(account_sid), HMAC_SHA1
    else:
        keys, algorithm = _keys(keyring, account_sid, signature_settings)
    expected = _header_bytes(signature, algorithm)
    _check(keys, url, _params_message(params), expected)


def verify_body(
    keyring: Keyring,
    url: str,
    body: bytes,
    signature: str | None,
    *,
    account_sid: str | None = None,
    signature_settings: str | None = None,
) -> None:
    """Check a webhook with a non-form body (JSON): the URL's ``bodySHA256`` and the signature.

    Twilio puts ``bodySHA256=<hex sha256 of the raw body>`` in the URL and signs the URL alone
    (docs/twilio.md, "JSON bodies"). Both must hold: the signature over ``url`` (with its port variants,
    no params) and ``sha256(body).hexdigest() == bodySHA256``. ``body`` must be the raw bytes received.
    Raises :class:`~callstate.errors.InvalidSignature` with a reason saying which check failed. Keys are
    chosen as by :func:`verify`.
    """
    keys, algorithm = _keys(keyring, account_sid, signature_settings)
    expected = _header_bytes(signature, algorithm)
    claimed = _body_sha256(url)
    if claimed is None:
        raise InvalidSignature("URL has no bodySHA256 parameter", code="malformed")
    _check(keys, url, b"", expected)
    # The signature is checked first: it is the cheaper of the two for a body of any size.
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest().encode("ascii"), _encode(claimed)):
        raise InvalidSignature("body does not match its bodySHA256")


def _keys(
    keyring: Keyring, account_sid: str | None, signature_settings: str | None
) -> tuple[tuple[hmac.HMAC, ...], str]:
    """The keys to try and their algorithm: the auth tokens unless a SharedKey is named."""
    if signature_settings is not None:
        key_id, algorithm = parse_settings_header(signature_settings)
        # A header naming no key and no other algorithm is the legacy auth-token signature, as
        # for twilio-python's get_signature_algorithm.
        if key_id is not None or algorithm != HMAC_SHA1:
            return keyring._shared_keys_for(key_id, algorithm), algorithm
    return keyring._keys_for(account_sid), HMAC_SHA1


def _printable(text: str) -> str:
    """``text`` quoted if it is short and plain, for a 403 reason (it comes from the request)."""
    return repr(text) if _PRINTABLE_KEY_ID.fullmatch(text) else "(unreadable)"


def _key(token: str) -> hmac.HMAC:
    """An HMAC-SHA1 keyed with ``token``; ``.copy()`` clones it without re-deriving the key pads."""
    return hmac.new(token.encode("utf-8"), digestmod=hashlib.sha1)


def _encode(text: str) -> bytes:
    # surrogatepass: a lone surrogate (never in text Twilio signed) must make the check fail, not raise.
    return text.encode("utf-8", "surrogatepass")


def _params_message(params: Params) -> bytes:
    """The parameter part of the string to sign: ``name + value`` for each pair, sorted, deduplicated.

    Sorting the distinct ``(name, value)`` tuples orders by name, then by value, both in code-point
    order (= UTF-8 byte order, "Unix-style case-sensitive"), and drops a value repeated under the
    same name: twilio-python's ``for name in sorted(set(params)): for value in
    sorted(set(values))`` and twilio-node (docs/twilio.md, "Sorting and repeated names", vector #6).
    Sorting by ``name + value`` would be wrong (vector #15).
    """
    return _encode(signed_concatenation(params.items() if isinstance(params, Mapping) else params))


def _header_bytes(signature: str | None, algorithm: str) -> bytes:
    """The header value as bytes for a constant-time compare, or the reason it cannot match."""
    if signature is None:
        raise InvalidSignature(f"{SIGNATURE_HEADER} header is missing", code="missing")
    if not signature:
        raise InvalidSignature(f"{SIGNATURE_HEADER} header is empty", code="missing")
    if len(signature) != _ALGORITHMS[algorithm][1]:
        name = algorithm.replace("_", "-")
        hint = "" if algorithm != HMAC_SHA1 else f" (a SharedKey signature comes with {SETTINGS_HEADER})"
        raise InvalidSignature(f"{SIGNATURE_HEADER} header is not a base64 {name}{hint}", code="malformed")
    return _encode(signature)


def _check(keys: tuple[hmac.HMAC, ...], url: str, params_message: bytes, signature: bytes) -> None:
    """Accept if some URL variant under some key reproduces ``signature``; else raise.

    Returning at the first match reveals only which variant matched, never anything about the
    expected value; each comparison itself is constant-time.
    """
    for variant in url_variants(url):
        message_start = _encode(variant)
        for key in keys:
            mac = key.copy()
            mac.update(message_start)
            mac.update(params_message)
            if hmac.compare_digest(base64.b64encode(mac.digest()), signature):
                return
    raise InvalidSignature("signature does not match")


def _body_sha256(url: str) -> str | None:
    """The first ``bodySHA256`` value of the URL's query, as the official libraries take it."""
    query = url.partition("#")[0].partition("?")[2]
    for segment in query.split("&"):
        name, _, value = segment.partition("=")
        if name == "bodySHA256":
            return value
    return None
