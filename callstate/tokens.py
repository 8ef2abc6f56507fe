"""Read tokens for the read API: signed with ``SECRET_KEY`` by itsdangerous, with an expiry inside.

A token is ``URLSafeSerializer(SECRET_KEY, salt="callstate.read").dumps({"exp": <unix seconds>})``,
with ``"acc": [AccountSid, …]`` when it may read only those accounts' calls. The expiry and the
accounts travel in the signed payload, so a token states its own lifetime and scope and the server
needs no table of issued tokens. Rotating ``SECRET_KEY`` revokes every token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from itsdangerous import BadSignature, URLSafeSerializer

from callstate.errors import Unauthorized
from callstate.event import ACCOUNT_SID

_SALT: Final = "callstate.read"

#: Default lifetime of a token printed by ``callstate token``.
DEFAULT_TTL: Final = 24 * 3600
#: The longest lifetime a token may have: a leaked token is revoked only by rotating SECRET_KEY
#: (which revokes every token), so none may outlive this by much.
MAX_TTL: Final = 30 * 86_400
#: The shortest SECRET_KEY accepted: 32 characters of a random string (``secrets.token_urlsafe``)
#: carry 192 bits; a short, human-chosen key can be guessed offline from one token.
MIN_SECRET_KEY: Final = 32


def _serializer(secret_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=_SALT)


def issue(
    secret_key: str,
    ttl: int = DEFAULT_TTL,
    now: Callable[[], float] = time.time,
    accounts: Sequence[str] = (),
) -> str:
    """A read token valid for ``ttl`` seconds from ``now()``; ``ttl`` is 1 to :data:`MAX_TTL`, and
    ``secret_key`` at least :data:`MIN_SECRET_KEY` characters (``ValueError`` otherwise). The token
    reads the calls of ``accounts`` only (AccountSids), or every call when ``accounts`` is empty."""
    if not secret_key:
        raise ValueError("SECRET_KEY is empty")
    if len(secret_key) < MIN_SECRET_KEY:
        raise ValueError(f"SECRET_KEY is shorter than {MIN_SECRET_KEY} characters")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds (30 days)")
    for account in accounts:
        if not ACCOUNT_SID.fullmatch(account):
            raise ValueError(f"{account!r} is not an AccountSid (AC followed by 32 hex digits)")
    payload: dict[str, object] = {"exp": int(now()) + ttl}
    if accounts:
        payload["acc"] = sorted(set(accounts))
    return _serializer(secret_key).dumps(payload)


def check(secret_key: str, token: str, now: Callable[[], float] = time.time) -> frozenset[str] | None:
    """The accounts a valid, unexpired read token may read (``None``: every account); raise
    :class:`Unauthorized` if the token is not one.

    A token that would expire more than :data:`MAX_TTL` from now is refused as well: it was not
    issued by :func:`issue` (or the clock went back by weeks)."""
    if not secret_key:
        raise Unauthorized("read API disabled: SECRET_KEY is not set")
    if not token:
        raise Unauthorized("Authorization: Bearer <read token> is missing")
    try:
        payload = _serializer(secret_key).loads(token)
    except BadSignature:
        raise Unauthorized("read token is invalid") from None
    expires = payload.get("exp") if isinstance(payload, dict) else None
    if not isinstance(expires, int):
        raise Unauthorized("read token is invalid")
    current = now()
    if expires <= current:
        raise Unauthorized("read token has expired")
    if expires > current + MAX_TTL:
        raise Unauthorized("read token lives longer than 30 days")
    accounts = payload.get("acc")
    if accounts is None:
        return None
    if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
        raise Unauthorized("read token is invalid")
    return frozenset(accounts)
