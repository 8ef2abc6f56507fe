"""The web process: app factory, routes, and the one place where errors become HTTP answers.

``create_app(settings)`` builds the Starlette app; its lifespan owns the Redis connection pool and
the group-commit writer, and nothing happens at import time. uvicorn runs it with ``--factory``
(see ``callstate web``).

The callback endpoints live in :mod:`callstate.receiver.callbacks`, the read API in
:mod:`callstate.receiver.readapi`; both raise :class:`~callstate.errors.RequestRejected` subclasses
that the handlers at the bottom of this module turn into answers.
"""

from __future__ import annotations

import asyncio
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
from callstate.jobqueue import enqueue_events, make_queue
from callstate.logs import LineBuffer
from callstate.receiver import readapi
from callstate.receiver.callbacks import LOG, CallbackEndpoint
from callstate.receiver.groupcommit import GroupCommit
from callstate.receiver.publicurl import TrustedProxies
from callstate.receiver.signature import Keyring
from callstate.settings import Settings

#: The status code of each refusal; every other exception is a bug (and a 500).
STATUS: Final[dict[type[Exception], int]] = {
    InvalidCallback: 400,
    Unauthorized: 401,
    InvalidSignature: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
}

#: Seconds between two writes of the buffered request log lines.
LOG_FLUSH_INTERVAL: Final = 0.1


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
    request_log = LineBuffer("callstate.web", settings.log_format)

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
        flusher = asyncio.create_task(_flush_every(request_log, LOG_FLUSH_INTERVAL))
        try:
            yield
        finally:
            await commit.aclose()
            flusher.cancel()
            request_log.flush()
            redis.close()

    routes = [
        Route("/twilio/call-status", CallbackEndpoint("call"), methods=["GET", "POST"]),
        Route("/twilio/recording-status", CallbackEndpoint("recording"), methods=["GET", "POST"]),
        Route("/calls", readapi.list_calls, methods=["GET"]),
        Route("/calls/{sid}", readapi.get_call, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestLog, lines=request_log)],
        exception_handlers={
            RequestRejected: refused,
            StoreUnavailable: unavailable,
            RedisError: unavailable,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


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
    request.scope.setdefault(LOG, {})["reason"] = exc.reason
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    return PlainTextResponse(exc.reason, status_code=status)


async def unavailable(request: Request, exc: Exception) -> Response:
    settings: Settings = request.app.state.settings
    reason = "store unavailable, retry later"
    request.scope.setdefault(LOG, {})["reason"] = f"{reason}: {type(exc).__name__}"
    return PlainTextResponse(reason, status_code=503, headers={"Retry-After": str(settings.retry_after)})


async def _flush_every(lines: LineBuffer, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        lines.flush()


class RequestLog:
    """One log line per request: method, path (never the query: GET callbacks carry phone
    numbers there), status, milliseconds, and what the endpoint added (call SID, reason)."""

    def __init__(self, app: ASGIApp, lines: LineBuffer) -> None:
        self.app = app
        self.lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        fields: dict[str, object] = {}
        scope[LOG] = fields

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.lines.emit(
                "request",
                "info" if status < 500 else "error",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
                **fields,
            )
