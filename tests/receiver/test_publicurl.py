"""The public URL Twilio signed, rebuilt from an ASGI scope (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.publicurl import TrustedProxies, public_url

NOBODY = TrustedProxies.parse("")


def scope(
    path: bytes = b"/twilio/call-status",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: str = "203.0.113.7",
    scheme: str = "http",
) -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": scheme,
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "headers": headers if headers is not None else [(b"host", b"calls.example.com")],
        "client": (client, 40000),
        "server": ("10.0.0.5", 8000),
    }


class TestPublicUrl:
    def test_base_url_with_a_prefix_wins_over_the_request(self) -> None:
        """PUBLIC_BASE_URL (with the prefix a proxy strips) + the path the app sees + the query."""
        url = public_url(scope(query=b"tenant=a"), "https://example.com/voice", NOBODY)
        assert url == "https://example.com/voice/twilio/call-status?tenant=a"

    def test_query_and_path_are_kept_byte_for_byte(self) -> None:
        """No re-encoding, no re-sorting: Twilio signed them as they are (docs/twilio.md, "Query
        strings")."""
        raw = b"b=2&a=%3A%40+x&a=1"
        url = public_url(scope(path=b"/twilio/call%2Dstatus", query=raw), None, NOBODY)
        assert url == "http://calls.example.com/twilio/call%2Dstatus?b=2&a=%3A%40+x&a=1"

    def test_forwarded_headers_count_only_from_trusted_peers(self) -> None:
        """X-Forwarded-Proto/-Host from an untrusted peer are ignored; from a trusted one, used."""
        headers = [
            (b"host", b"internal:8000"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"calls.example.com, proxy.internal"),
        ]
        untrusted = public_url(scope(headers=headers), None, TrustedProxies.parse("10.0.0.0/8"))
        trusted = public_url(
            scope(headers=headers, client="10.1.2.3"), None, TrustedProxies.parse("10.0.0.0/8")
        )
        assert untrusted == "http://internal:8000/twilio/call-status"
        assert trusted == "https://calls.example.com/twilio/call-status"

    def test_everyone_is_trusted_with_a_star(self) -> None:
        """`*` is for a platform router that always overwrites the forwarded headers."""
        headers = [(b"host", b"x"), (b"x-forwarded-proto", b"https")]
        assert public_url(scope(headers=headers), None, TrustedProxies.parse("*")).startswith("https://")

    def test_no_host_header_falls_back_to_the_server_address(self) -> None:
        """HTTP/1.0 without Host: the address the server listens on."""
        assert public_url(scope(headers=[]), None, NOBODY) == "http://10.0.0.5:8000/twilio/call-status"

    @pytest.mark.parametrize("peer", ["not-an-ip", "", "::1"])
    def test_peers_that_are_not_in_the_list_are_not_trusted(self, peer: str) -> None:
        """Unparseable or unlisted peers never count as proxies."""
        assert peer not in TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")

    def test_a_bad_entry_is_an_error(self) -> None:
        """A typo in FORWARDED_ALLOW_IPS is refused, not silently ignored."""
        with pytest.raises(ValueError, match="10.0.0.300"):
            TrustedProxies.parse("10.0.0.300")
