"""One error hierarchy: each refusal carries its HTTP status and headers (callstate.errors)."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from callstate import errors
from callstate.errors import (
    CallstateError,
    InvalidCallback,
    InvalidQuery,
    MethodNotAllowed,
    RequestRejected,
    StoreUnavailable,
)
from callstate.settings import Settings
from receiver.app import error_answer

SETTINGS = Settings(auth_token="t", retry_after=7)


def refusals() -> list[type[RequestRejected]]:
    found = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, RequestRejected) and cls is not RequestRejected
    ]
    assert len(found) >= 9
    return found


class TestHierarchy:
    def test_every_error_is_a_callstate_error(self) -> None:
        """Callers can catch everything callstate raises on purpose with one class."""
        for cls in vars(errors).values():
            if isinstance(cls, type) and issubclass(cls, Exception):
                assert issubclass(cls, CallstateError), cls

    @pytest.mark.parametrize(
        ("error", "status"),
        [
            (InvalidCallback("CallSid is missing", field="CallSid"), 400),
            (InvalidQuery("limit is bad", field="limit"), 400),
            (errors.Unauthorized("no token"), 401),
            (errors.Forbidden("scoped token"), 403),
            (errors.InvalidSignature("wrong"), 403),
            (errors.NotFound("no such call"), 404),
            (MethodNotAllowed("no", allow=("GET",)), 405),
            (errors.PayloadTooLarge("big"), 413),
            (errors.UnsupportedMediaType("json"), 415),
            (StoreUnavailable("ConnectionError"), 503),
        ],
    )
    def test_the_answer_is_the_class_status_and_reason(self, error: RequestRejected, status: int) -> None:
        """error_answer reads the status from the error, whatever its place in the hierarchy."""
        rejected, answer = error_answer(error, SETTINGS)
        assert rejected is error
        assert answer.status_code == status
        assert bytes(answer.body).decode() == error.reason

    def test_every_refusal_has_a_distinct_meaningful_status(self) -> None:
        """Each class states a 4xx or 5xx code; classes share one only within a family (the
        400s under BadRequest, the 403s under Forbidden)."""
        for cls in refusals():
            assert 400 <= cls.status_code < 600
            same = [other for other in refusals() if other.status_code == cls.status_code]
            family = min(same, key=lambda other: len(other.__mro__))
            assert all(issubclass(other, family) for other in same), same

    def test_a_read_api_query_error_is_not_an_invalid_callback(self) -> None:
        """A malformed query is told apart from a callback problem (logs, handlers)."""
        assert not issubclass(InvalidQuery, InvalidCallback)

    def test_405_lists_the_allowed_methods(self) -> None:
        _, answer = error_answer(MethodNotAllowed("no", allow=("GET", "HEAD", "POST")), SETTINGS)
        assert answer.headers["allow"] == "GET, HEAD, POST"

    def test_a_redis_error_is_a_503_with_the_configured_retry_after(self) -> None:
        """Fail closed: an unstored callback is a 503 that tells the client when to retry."""
        rejected, answer = error_answer(RedisConnectionError("refused"), SETTINGS)
        assert isinstance(rejected, StoreUnavailable)
        assert rejected.cause == "ConnectionError: refused"
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "7"
        assert "refused" not in bytes(answer.body).decode()

    def test_a_tls_verification_failure_names_the_settings_in_the_log(self) -> None:
        """The cause (logged, never sent) says which settings fix an untrusted certificate."""
        error = RedisConnectionError(
            "Error 1 connecting to kv.example:6380. [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
            "verify failed: self-signed certificate (_ssl.c:1006)."
        )
        rejected, answer = error_answer(error, SETTINGS)
        assert isinstance(rejected, StoreUnavailable)
        assert "(self-signed certificate)" in rejected.cause
        assert "REDIS_TLS_VERIFY=none" in rejected.cause
        assert "REDIS_TLS_CA_FILE" in rejected.cause
        assert "REDIS_TLS" not in bytes(answer.body).decode()

    def test_a_store_error_naming_its_retry_after_keeps_it(self) -> None:
        _, answer = error_answer(StoreUnavailable("full", retry_after=30), SETTINGS)
        assert answer.headers["retry-after"] == "30"
