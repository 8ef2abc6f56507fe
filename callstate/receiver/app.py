"""The web process: app factory, routes, and the one place where errors become HTTP answers.

``create_app(settings)`` builds the Starlette app; its lifespan owns the Redis connection pool and
the group-commit writer, and nothing happens at import time. uvicorn runs it with ``--factory``
(see ``callstate web``).

A callback is checked cheapest first (DESIGN section 2): size (413), content type (415), signature
(403), content (400); then it is queued and answered 204 only once Redis has it (503 otherwise).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

from redis import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callstate.errors import (
    InvalidCallback,
    InvalidSignature,
    NotFound,
    PayloadTooLarge,
    RequestRejected,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from callstate.event import Kind, parse_callback
from callstate.jobqueue import enqueue_events, make_queue
from callstate.logs import log_event
from callstate.receiver import readapi
from callstate.receiver.form import parse_form
from callstate.receiver.groupcommit import GroupCommit
from callstate.receiver.publicurl import TrustedProxies, public_url
from callstate.receiver.signature import Keyring, verify
from callstate.settings import Settings

logger = logging.getLogger("callstate.web")

FORM: Final = "application/x-www-form-urlencoded"

#: The status code of each refusal; every other exception is a bug (and a 500).
STATUS: Final[dict[type[Exception], int]] = {
    InvalidCallback: 400,
    Unauthorized: 401,
    InvalidSignature: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
}

#: Log fields of the current request, filled by endpoints and handlers, written by RequestLog.
_LOG: Final = "callstate.log"


def connect(settings: Settings) -> Redis:
    """A Redis client whose every command fails within ``redis_timeout`` instead of hanging."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )


def create_app(settings: Settings | None = None) -> Starlette:
    """The web app. ``settings`` defaults to the environment; a missing token fails here."""
    settings = (settings or Settings.from_environ(os.environ)).require_web()
    keyring = Keyring(
        settings.auth_token,
        previous=settings.previous_auth_token or None,
        subaccounts=settings.subaccount_tokens,
    )
    trusted = TrustedProxies.parse(settings.forwarded_allow_ips)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(settings)
        queue = make_queue(redis, settings.queue_name)
        writer = partial(enqueue_events, queue, timeout=settings.job_timeout)
        commit = GroupCommit(writer, max_batch=settings.batch_max)
        app.state.redis = redis
        app.state.commit = commit
        app.state.keyring = keyring
        app.state.trusted = trusted
        try:
            yield
        finally:
            await commit.aclose()
            redis.close()

    routes = [
        Route("/twilio/call-status", partial(receive_callback, kind="call"), methods=["GET", "POST"]),
        Route(
            "/twilio/recording-status",
            partial(receive_callback, kind="recording"),
            methods=["GET", "POST"],
        ),
        Route("/calls", readapi.list_calls, methods=["GET"]),
        Route("/calls/{sid}", readapi.get_call, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestLog)],
        exception_handlers={
            RequestRejected: refused,
            StoreUnavailable: unavailable,
            RedisError: unavailable,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


async def receive_callback(request: Request, kind: Kind) -> Response:
    """A Twilio callback: verify, parse, queue; 204 once Redis has it."""
    settings: Settings = request.app.state.settings
    log = request.scope[_LOG]
    log["kind"] = kind
    signature = request.headers.get("x-twilio-signature")
    if request.method == "POST":
        body = await _read_body(request, settings.max_body_bytes)
        if request.headers.get("content-type", "").partition(";")[0].strip().lower() != FORM:
            raise UnsupportedMediaType(f"callbacks must be {FORM}")
        if not signature:
            raise InvalidSignature("X-Twilio-Signature header is missing")
        params = parse_form(body)
        signed_params = params
    else:
        if not signature:
            raise InvalidSignature("X-Twilio-Signature header is missing")
        # GET: Twilio appended the parameters to the URL and signed the whole URL (reference 3.3).
        params = parse_form(request.scope.get("query_string", b""))
        signed_params = []
    url = public_url(request.scope, settings.public_base_url, request.app.state.trusted)
    account_sid = next((value for name, value in params if name == "AccountSid"), None)
    verify(request.app.state.keyring, url, signed_params, signature, account_sid=account_sid)
    event = parse_callback(
        kind,
        params,
        received_at=time.time(),
        idempotency_token=request.headers.get("i-twilio-idempotency-token"),
    )
    log["call_sid"] = event.call_sid
    log["callback_status"] = event.status
    if event.recording_sid:
        log["recording_sid"] = event.recording_sid
    await request.app.state.commit.submit(event.to_wire())
    return Response(status_code=204)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or :class:`PayloadTooLarge` as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def healthz(request: Request) -> Response:
    """The process is up; touches nothing else."""
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """Redis answers a PING; 503 otherwise."""
    await run_in_threadpool(request.app.state.redis.ping)
    return PlainTextResponse("ready")


# -- errors to HTTP: the only place ------------------------------------------------------------


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRejected)
    request.scope.setdefault(_LOG, {})["reason"] = exc.reason
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    return PlainTextResponse(exc.reason, status_code=status)


async def unavailable(request: Request, exc: Exception) -> Response:
    settings: Settings = request.app.state.settings
    reason = "store unavailable, retry later"
    request.scope.setdefault(_LOG, {})["reason"] = f"{reason}: {type(exc).__name__}"
    return PlainTextResponse(reason, status_code=503, headers={"Retry-After": str(settings.retry_after)})


class RequestLog:
    """One log line per request: method, path (never the query: GET callbacks carry phone
    numbers there), status, milliseconds, and what the endpoint added (call SID, reason)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        fields: dict[str, object] = {}
        scope[_LOG] = fields

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log_event(
                logger,
                "request",
                logging.INFO if status < 500 else logging.ERROR,
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
                **fields,
            )
