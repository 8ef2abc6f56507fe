"""The one error hierarchy of callstate.

Every error a caller may want to handle derives from :class:`CallstateError` and carries its data on
attributes, never only in the message. The HTTP layer maps these classes to status codes in exactly
one place (``receiver.app``); nothing else decides a status code.
"""

from __future__ import annotations


class CallstateError(Exception):
    """Base class of every error raised on purpose by callstate."""


class ConfigError(CallstateError):
    """An environment variable is missing or has a bad value.

    ``variable`` names it, so the start-up error tells the operator what to fix.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class RequestRejected(CallstateError):
    """A request we refuse; ``reason`` is short, safe to show the client and to log.

    A reason never contains a secret, a signature or a phone number.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MethodNotAllowed(RequestRejected):
    """The path exists but not for this method (HTTP 405)."""


class PayloadTooLarge(RequestRejected):
    """The body is over the configured limit (HTTP 413)."""


class UnsupportedMediaType(RequestRejected):
    """A callback POST that is not ``application/x-www-form-urlencoded`` (HTTP 415)."""


class InvalidSignature(RequestRejected):
    """``X-Twilio-Signature`` is missing or does not match (HTTP 403). Nothing was stored."""


class InvalidCallback(RequestRejected):
    """A correctly signed request we cannot use (HTTP 400); ``field`` names the culprit.

    ``field`` is ``None`` when the body itself is unreadable (invalid UTF-8, broken encoding).
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.field = field


class Unauthorized(RequestRejected):
    """A read API request without a valid, unexpired read token (HTTP 401)."""


class NotFound(RequestRejected):
    """The thing asked for is not in the store (HTTP 404)."""


class StoreUnavailable(CallstateError):
    """Redis could not be reached or did not answer in time (HTTP 503 with ``Retry-After``).

    Fail closed: a callback we could not store is never acknowledged, so Twilio may retry it.
    """
