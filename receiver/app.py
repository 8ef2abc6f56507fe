"""The web process: app factory, routes, and the one place where errors become HTTP answers.

``create_app(settings)`` builds the app: a :class:`Receiver` that answers callbacks itself and
hands everything else to a Starlette app, whose lifespan owns the Redis connection pool and the
group-commit writer. Nothing happens at import time. uvicorn runs it with ``--factory`` (see
``callstate web``).

The callback endpoints live in :mod:`receiver.callbacks`, the read API in
:mod:`receiver.readapi`; both raise :class:`~callstate.errors.RequestRejected` subclasses
that :func:`error_answer` turns into answers, for :class:`Receiver` and Starlette's handlers alike.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from callstate.connection import connect
from callstate.errors import (
    InvalidCallback,
    InvalidSignature,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestRejected,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from callstate.jobqueue import enqueue_batch, make_queue
from callstate.logs import LineBuffer
from callstate.settings import Settings
from receiver import readapi
from receiver.callbacks import LOG, CallbackEndpoint
from receiver.groupcommit import GroupCommit
from receiver.publicurl import TrustedProxies
from receiver.signature import Keyring

#: The status code of each refusal; every other exception is a bug (and a 500).
STATUS: Final[dict[type[Exception], int]] = {
    InvalidCallback: 400,
    Unauthorized: 401,
    InvalidSignature: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
}

#: Seconds between two writes of the buffered request log lines.
LOG_FLUSH_INTERVAL: Final = 0.1


def create_app(settings: Settings | None = None) -> Receiver:
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
        redis = connect(settings, command_timeout=settings.redis_timeout)
        queue = make_queue(redis, settings.queue_name)
        commit = GroupCommit(
            partial(enqueue_batch, queue, timeout=settings.job_timeout),
            max_batch=settings.batch_max,
            min_interval=settings.commit_interval_ms / 1000,
            behind_interval=settings.commit_behind_ms / 1000,
        )
        app.state.redis = redis
        app.state.commit = commit
        app.state.keyring = keyring
        app.state.trusted = trusted
        flusher = asyncio.create_task(_flush_every(request_log, LOG_FLUSH_INTERVAL))
        # Everything allocated so far lives as long as the process: keep the collector from
        # walking it again and again while requests churn through short-lived objects, and let
        # those pile up a little longer between young collections (a callback allocates a few
        # hundred objects; the default threshold of 700 collects every other request or so).
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        try:
            yield
        finally:
            await commit.aclose()
            flusher.cancel()
            request_log.flush()
            redis.close()

    app = Starlette(
        routes=[
            Route("/calls", readapi.list_calls, methods=["GET"]),
            Route("/calls/{sid}", readapi.get_call, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={
            RequestRejected: handle_error,
            StoreUnavailable: handle_error,
            RedisError: handle_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return Receiver(app, request_log)


async def healthz(request: Request) -> Response:
    """The process is up; touches nothing else."""
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """Redis answers a PING; 503 otherwise."""
    await run_in_threadpool(request.app.state.redis.ping)
    return PlainTextResponse("ready")


# -- errors to HTTP: the only place ------------------------------------------------------------


def error_answer(exc: Exception, settings: Settings) -> tuple[int, str, dict[str, str]]:
    """(status, reason, extra headers) for an exception an endpoint raised on purpose.

    Fail closed: a callback that could not be stored gets 503 with Retry-After, never 2xx.
    """
    if isinstance(exc, RequestRejected):
        status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
        return status, exc.reason, {}
    return 503, "store unavailable, retry later", {"Retry-After": str(settings.retry_after)}


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler for the read API and the probes."""
    status, reason, headers = error_answer(exc, request.app.state.settings)
    _note_reason(request.scope, exc, reason)
    return PlainTextResponse(reason, status_code=status, headers=headers)


def _note_reason(scope: Scope, exc: Exception, reason: str) -> None:
    detail = reason if isinstance(exc, RequestRejected) else f"{reason}: {type(exc).__name__}"
    scope.setdefault(LOG, {})["reason"] = detail


async def _flush_every(lines: LineBuffer, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        lines.flush()


class Receiver:
    """The web process's ASGI app: the Starlette app, with the callback endpoints in front of it.

    Callbacks are the whole load of the service, so GET and POST on their two paths go straight
    to their :class:`CallbackEndpoint`, with the errors they raise answered by
    :func:`error_answer`; everything else (the read API, probes, lifespan) goes through Starlette.
    Skipping Starlette's router and middleware for callbacks saves about a fifth of their CPU
    time (bench/RESULTS.md).

    Every request gets one log line here: method, path (never the query: GET callbacks carry phone
    numbers there), status, milliseconds, and what the endpoint noted (call SID, reason).
    """

    def __init__(self, app: Starlette, lines: LineBuffer) -> None:
        self.app = app
        self.state = app.state
        self.lines = lines
        self.callbacks = {
            "/twilio/call-status": CallbackEndpoint("call", app.state),
            "/twilio/recording-status": CallbackEndpoint("recording", app.state),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, object] = {}
        scope[LOG] = fields
        endpoint = self.callbacks.get(scope["path"])
        status = 500
        try:
            if endpoint is not None:
                status = await self._callback(endpoint, scope, receive, send)
            else:
                status = await self._starlette(scope, receive, send)
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

    async def _callback(self, endpoint: CallbackEndpoint, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            # HEAD is a GET without a body, as everywhere in HTTP (and Starlette).
            if scope["method"] not in ("GET", "HEAD", "POST"):
                raise MethodNotAllowed("callbacks are GET or POST")
            await endpoint(scope, receive, send)
        except (RequestRejected, StoreUnavailable, RedisError) as exc:
            status, reason, headers = error_answer(exc, self.state.settings)
            if status == 405:
                headers["Allow"] = "GET, HEAD, POST"
            _note_reason(scope, exc, reason)
            await PlainTextResponse(reason, status_code=status, headers=headers)(scope, receive, send)
            return status
        return 204

    async def _starlette(self, scope: Scope, receive: Receive, send: Send) -> int:
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        return status
