"""Read tokens: signed with SECRET_KEY, expiring, refused when forged or expired."""

from __future__ import annotations

import pytest

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

    def test_a_tampered_token_is_refused(self) -> None:
        """Changing any character breaks the signature."""
        token = tokens.issue(KEY, ttl=60)
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        with pytest.raises(Unauthorized):
            tokens.check(KEY, tampered)

    def test_no_secret_key_means_no_read_api(self) -> None:
        """Without SECRET_KEY nothing is accepted, and issuing fails."""
        with pytest.raises(Unauthorized, match="SECRET_KEY"):
            tokens.check("", "anything")
        with pytest.raises(ValueError, match="SECRET_KEY"):
            tokens.issue("", ttl=60)
