"""Read tokens for the read API: signed with ``SECRET_KEY`` by itsdangerous, with an expiry inside.

A token is ``URLSafeSerializer(SECRET_KEY, salt="callstate.read").dumps({"exp": <unix seconds>})``.
The expiry travels in the signed payload, so a token states its own lifetime and the server needs
no table of issued tokens. Rotating ``SECRET_KEY`` revokes every token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from itsdangerous import BadSignature, URLSafeSerializer

from callstate.errors import Unauthorized

_SALT: Final = "callstate.read"

#: Default lifetime of a token printed by ``callstate token``.
DEFAULT_TTL: Final = 24 * 3600


def _serializer(secret_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=_SALT)


def issue(secret_key: str, ttl: int = DEFAULT_TTL, now: Callable[[], float] = time.time) -> str:
    """A read token valid for ``ttl`` seconds from ``now()``."""
    if not secret_key:
        raise ValueError("SECRET_KEY is empty")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    return _serializer(secret_key).dumps({"exp": int(now()) + ttl})


def check(secret_key: str, token: str, now: Callable[[], float] = time.time) -> None:
    """Return if ``token`` is a valid, unexpired read token; raise :class:`Unauthorized` if not."""
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
    if expires <= now():
        raise Unauthorized("read token has expired")
