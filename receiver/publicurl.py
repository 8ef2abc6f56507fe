"""The public URL of a request: the exact string Twilio signed.

Twilio signs the URL it called (docs/twilio.md, "The signature algorithm"), which is rarely what the
app sees behind a proxy or TLS terminator. Two ways to know it, safest first:

* ``PUBLIC_BASE_URL`` is set: it is that base (which may carry a path prefix the proxy strips), plus
  the path the app sees, plus the raw query;
* otherwise the request's own scheme and ``Host``, where ``X-Forwarded-Proto`` and
  ``X-Forwarded-Host`` count only when the TCP peer is a trusted proxy (``FORWARDED_ALLOW_IPS``,
  uvicorn's variable and format). Trusting every peer would let anyone choose the URL we verify
  (docs/twilio.md, "Proxies").

The path and query are used byte for byte as received (``raw_path``, ``query_string``); re-encoding
or re-sorting them breaks signatures (docs/twilio.md, "Query strings").
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """Peers whose ``X-Forwarded-*`` headers we believe. ``*`` trusts everyone (a platform router
    that always overwrites those headers, like Heroku's)."""

    networks: tuple[Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """``"127.0.0.1, 10.0.0.0/8"`` or ``"*"``; raises ValueError naming a bad entry."""
        items = [item.strip() for item in spec.split(",") if item.strip()]
        if "*" in items:
            return cls(everyone=True)
        return cls(tuple(ipaddress.ip_network(item, strict=False) for item in items))

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        return isinstance(host, str) and _trusted(self.networks, host)


# Parsing the peer's address costs more than the rest of the URL: a proxy has few addresses.
@functools.lru_cache(maxsize=1024)
def _trusted(networks: tuple[Network, ...], host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            # A proxy chain appends: the first entry is what the outermost proxy saw.
            return value.decode("latin-1").split(",")[0].strip() or None
    return None


def public_url(scope: Scope, base: str | None, trusted: TrustedProxies) -> str:
    """The URL Twilio called for this ASGI request: scheme, host, path and raw query, no fragment."""
    # raw_path is the path on the wire, before any decoding; a proxy that strips a prefix has
    # already stripped it here, and PUBLIC_BASE_URL puts it back.
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    tail = path.decode("utf-8", "replace") + ("?" + query.decode("utf-8", "replace") if query else "")
    if base is not None:
        return base + tail
    headers = scope.get("headers", ())
    scheme = scope.get("scheme", "http")
    host = _header(headers, b"host")
    client = scope.get("client")
    if client is not None and client[0] in trusted:
        scheme = _header(headers, b"x-forwarded-proto") or scheme
        host = _header(headers, b"x-forwarded-host") or host
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = str(server[0]) if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}{tail}"
