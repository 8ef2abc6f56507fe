"""The one error hierarchy of callstate.

Every error a caller may want to handle derives from :class:`CallstateError` and carries its data on
attributes, never only in the message. An error that answers an HTTP request carries its own
``status_code`` and ``headers``, as Starlette's ``HTTPException`` does; the web process turns any
:class:`RequestRejected` into an answer in one place (``receiver.app``) by reading them, so no
table of classes and codes exists to drift.

::

    CallstateError
    ├── ConfigError                a variable is missing or malformed (start-up)
    ├── StoreConflict              a job lost its compare-and-set too often (RQ retries it)
    ├── UnreadableValue            a stored value this version cannot decode
    ├── UnusableAnswer             Twilio's REST API answered something we cannot use
    └── RequestRejected            an HTTP request we refuse (status_code, headers, reason)
        ├── BadRequest             400
        │   ├── InvalidCallback    400, a signed callback we cannot use (field)
        │   └── InvalidQuery       400, a read API query we cannot answer (field)
        ├── Unauthorized           401
        ├── Forbidden              403
        │   └── InvalidSignature   403, a callback whose signature does not verify (code)
        ├── NotFound               404
        ├── MethodNotAllowed       405 with Allow
        ├── PayloadTooLarge        413
        ├── UnsupportedMediaType   415
        └── StoreUnavailable       503 with Retry-After
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


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


class StoreConflict(CallstateError):
    """Calls kept changing under a job's compare-and-set; ``calls`` counts them.

    The job fails and RQ retries it: applying events is idempotent, so a retry is always safe.
    """

    def __init__(self, calls: int) -> None:
        super().__init__(f"{calls} calls kept changing under this job")
        self.calls = calls


class UnreadableValue(CallstateError):
    """A value read from the store cannot be decoded: not a zstd frame, a dictionary this version
    does not ship, or an event set cut short. Written by a newer callstate, or not by callstate."""


class UnusableAnswer(CallstateError):
    """Twilio's REST API answered, but not with a call resource we can use; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestRejected(CallstateError):
    """A request we refuse, answered ``status_code`` with ``reason`` as a plain-text body.

    ``reason`` is short, safe to show the client and to log: it never contains a secret, a
    signature or a phone number. ``headers`` are added to the answer.
    """

    status_code: ClassVar[int] = 400

    def __init__(self, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(RequestRejected):
    """A request we understood but cannot serve as it is (HTTP 400)."""

    status_code = 400


class InvalidCallback(BadRequest):
    """A correctly signed callback we cannot use; ``field`` names the culprit.

    ``field`` is ``None`` when the body itself is unreadable (invalid UTF-8, broken encoding).
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.field = field


class InvalidQuery(BadRequest):
    """A read API request with a malformed path or query parameter, named by ``field``."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.field = field


class Unauthorized(RequestRejected):
    """A read API or /metrics request without valid credentials (HTTP 401)."""

    status_code = 401


class Forbidden(RequestRejected):
    """Valid credentials that do not allow what was asked (HTTP 403)."""

    status_code = 403


class InvalidSignature(Forbidden):
    """``X-Twilio-Signature`` is missing or does not match (HTTP 403). Nothing was stored.

    ``code`` is the kind of failure, a label of ``callstate_signature_failures_total``:
    ``missing`` (no or an empty header), ``malformed`` (not a signature of the expected form),
    ``undecodable`` (the signed parameters cannot be decoded), ``unknown_key`` or
    ``unknown_algorithm`` (a SharedKey signature naming a key or an algorithm we do not hold), or
    ``mismatch``.
    """

    def __init__(self, reason: str, code: str = "mismatch") -> None:
        super().__init__(reason)
        self.code = code


class NotFound(RequestRejected):
    """The thing asked for is not in the store (HTTP 404)."""

    status_code = 404


class MethodNotAllowed(RequestRejected):
    """The path exists but not for this method (HTTP 405); ``allow`` lists the methods it has."""

    status_code = 405

    def __init__(self, reason: str, allow: tuple[str, ...]) -> None:
        super().__init__(reason, {"Allow": ", ".join(allow)})
        self.allow = allow


class Conflict(RequestRejected):
    """The request names something that is ambiguous as stored (HTTP 409), e.g. a CallSid that
    two tenants report."""

    status_code = 409


class PayloadTooLarge(RequestRejected):
    """The body is over the configured limit (HTTP 413)."""

    status_code = 413


class UnsupportedMediaType(RequestRejected):
    """A callback POST that is not ``application/x-www-form-urlencoded`` (HTTP 415)."""

    status_code = 415


class StoreUnavailable(RequestRejected):
    """Redis could not be reached or did not answer in time (HTTP 503 with ``Retry-After``).

    Fail closed: a callback we could not store is never acknowledged, so Twilio may retry it.
    The client sees one fixed reason; ``cause`` (what went wrong with Redis) is for the log.
    ``retry_after`` is the seconds a client should wait, when the raiser knows them; the web
    process adds its configured value otherwise.
    """

    status_code = 503

    def __init__(self, cause: str = "", retry_after: int | None = None) -> None:
        super().__init__(
            "store unavailable, retry later", {"Retry-After": str(retry_after)} if retry_after else None
        )
        self.cause = cause
        self.retry_after = retry_after
