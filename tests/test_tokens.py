"""Read tokens: signed with SECRET_KEY, expiring, refused when forged or expired."""

from __future__ import annotations

import pytest
from itsdangerous.encoding import base64_decode, base64_encode

from callstate import tokens
from callstate.errors import Unauthorized

KEY = "secret-key-for-tests"


class TestTokens:
    def test_a_fresh_token_is_accepted(self) -> None:
        """A token issued now with a TTL checks out."""
        tokens.check(KEY, tokens.issue(KEY, ttl=60))

    def test_an_expired_token_is_refused(self) -> None:
        """Past its expiry, a token is refused saying so."""
        token = tokens.issue(KEY, ttl=60, now=lambda: 1_000.0)
        with pytest.raises(Unauthorized, match="expired"):
            tokens.check(KEY, token, now=lambda: 1_061.0)

    def test_a_token_signed_with_another_key_is_refused(self) -> None:
        """Rotating SECRET_KEY revokes every token."""
        with pytest.raises(Unauthorized, match="invalid"):
            tokens.check(KEY, tokens.issue("another-key", ttl=60))

    def test_a_token_with_any_bit_of_its_signature_flipped_is_refused(self) -> None:
        """Flipping any one bit of the decoded signature breaks it, for each of its 160 bits. (A
        change to the base64 text alone may only touch padding bits and decode to the same bytes.)"""
        payload, _, signature = tokens.issue(KEY, ttl=60).rpartition(".")
        genuine = base64_decode(signature)
        for bit in range(len(genuine) * 8):
            raw = bytearray(genuine)
            raw[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(Unauthorized, match="invalid"):
                tokens.check(KEY, payload + "." + base64_encode(bytes(raw)).decode("ascii"))

    def test_a_token_with_a_changed_payload_is_refused(self) -> None:
        """A later expiry spliced in front of a genuine signature is refused."""
        token = tokens.issue(KEY, ttl=60, now=lambda: 1_000.0)
        _, _, signature = token.rpartition(".")
        longer = base64_encode(b'{"exp":99999999999}').decode("ascii")
        with pytest.raises(Unauthorized, match="invalid"):
            tokens.check(KEY, longer + "." + signature, now=lambda: 1_000.0)

    def test_no_secret_key_means_no_read_api(self) -> None:
        """Without SECRET_KEY nothing is accepted, and issuing fails."""
        with pytest.raises(Unauthorized, match="SECRET_KEY"):
            tokens.check("", "anything")
        with pytest.raises(ValueError, match="SECRET_KEY"):
            tokens.issue("", ttl=60)
