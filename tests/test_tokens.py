"""Read tokens: signed with SECRET_KEY, expiring, refused when forged or expired."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from callstate import tokens
from callstate.errors import Unauthorized

KEY = "secret-key-for-tests-0123456789abcdef"


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
            tokens.check(KEY, tokens.issue("another-key-" + KEY, ttl=60))

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

    def test_a_lifetime_over_30_days_is_not_issued(self) -> None:
        """30 days is the longest lifetime; a day more is refused, and so is none."""
        tokens.check(KEY, tokens.issue(KEY, ttl=tokens.MAX_TTL))
        for ttl in (tokens.MAX_TTL + 1, 0):
            with pytest.raises(ValueError, match="30 days"):
                tokens.issue(KEY, ttl=ttl)

    def test_a_token_living_longer_than_30_days_is_refused(self) -> None:
        """A genuine signature over an expiry more than 30 days away (issued by an older version,
        or with the clock set ahead) is refused."""
        serializer = URLSafeSerializer(KEY, salt="callstate.read")
        token = serializer.dumps({"exp": 1_000 + tokens.MAX_TTL + 1})
        with pytest.raises(Unauthorized, match="30 days"):
            tokens.check(KEY, token, now=lambda: 1_000.0)

    def test_a_short_secret_key_signs_nothing(self) -> None:
        """Under 32 characters a key could be guessed from one token: issuing refuses it."""
        with pytest.raises(ValueError, match="32"):
            tokens.issue(KEY[:31], ttl=60)

    def test_no_secret_key_means_no_read_api(self) -> None:
        """Without SECRET_KEY nothing is accepted, and issuing fails."""
        with pytest.raises(Unauthorized, match="SECRET_KEY"):
            tokens.check("", "anything")
        with pytest.raises(ValueError, match="SECRET_KEY"):
            tokens.issue("", ttl=60)

    def test_a_token_carries_the_accounts_it_may_read(self) -> None:
        """--account scopes a token; without it a token reads every account (None)."""
        tenant = "AC" + "7e" * 16
        assert tokens.check(KEY, tokens.issue(KEY, ttl=60, accounts=[tenant, tenant])) == frozenset([tenant])
        assert tokens.check(KEY, tokens.issue(KEY, ttl=60)) is None

    def test_an_account_that_is_not_an_account_sid_is_refused_at_issue(self) -> None:
        """A typo in --account fails loudly instead of giving a token that reads nothing."""
        with pytest.raises(ValueError, match="AccountSid"):
            tokens.issue(KEY, ttl=60, accounts=["ACnope"])
