"""The web process: app factory, routes, and the one place where errors become HTTP answers.

``create_app(settings)`` builds the app: a :class:`Receiver` that answers callbacks itself and
hands everything else to a Starlette app, whose lifespan owns the Redis connection pool and the
group-commit writer: it builds the process's typed :class:`~receiver.resources.Resources` and
closes them on exit. Nothing happens at import time. uvicorn runs it with ``--factory`` (see
``callstate web``).

The callback endpoints live in :mod:`receiver.callbacks`, the read API in
:mod:`receiver.readapi`; both raise :class:`~callstate.errors.RequestRejected` subclasses, which
carry their own status code and headers; :func:`error_answer` turns them into answers, for
:class:`Receiver` and Starlette's handlers alike.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from redis import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from callstate.connection import StoreHandle, connect, describe_error
from callstate.counters import ENDPOINTS, Tally, callback_field, signature_field
from callstate.errors import (
    InvalidSignature,
    MethodNotAllowed,
    RequestRejected,
    StoreUnavailable,
    UnreadableValue,
)
from callstate.jobqueue import failure_ttl, make_queue
from callstate.logs import LineBuffer
from callstate.metrics import redis_memory
from callstate.reader import Reader
from callstate.settings import Settings
from receiver import dashboard, livefeed, monitoring, readapi
from receiver.callbacks import LOG, CallbackEndpoint
from receiver.groupcommit import GroupCommit
from receiver.publicurl import TrustedProxies
from receiver.rejections import RejectionLog
from receiver.resources import STATE_KEY, Resources
from receiver.signature import Keyring

#: Redis connections of one web process (README, "Connection budget"): the group commit's writes in
#: flight, each on its own connection; and the read API and probes, whose requests run on threads.
COMMIT_CONNECTIONS: Final = 2
READ_CONNECTIONS: Final = 2

#: Seconds between two writes of the buffered request log lines.
LOG_FLUSH_INTERVAL: Final = 0.1

#: The methods of the callback endpoints (HEAD is a GET without a body, as everywhere in HTTP).
CALLBACK_METHODS: Final = ("GET", "HEAD", "POST")


def create_app(settings: Settings | None = None) -> Receiver:
    """The web app. ``settings`` defaults to the environment; a missing token fails here."""
    settings = (settings or Settings.from_environ(os.environ)).require_web()
    keyring = Keyring(
        settings.auth_token,
        previous=settings.previous_auth_token or None,
        subaccounts=settings.subaccount_tokens,
        shared=settings.shared_keys,
    )
    trusted = TrustedProxies.parse(settings.forwarded_allow_ips)
    request_log = LineBuffer("callstate.web", settings.log_format)
    tally = Tally()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Resources]]:
        # Two capped pools (README, "Connection budget"): callbacks' writes never wait for a
        # connection behind read requests, and a burst of reads cannot open one connection each.
        redis = connect(
            settings, command_timeout=settings.redis_timeout, role="web", max_connections=READ_CONNECTIONS
        )
        commit_redis = connect(
            settings,
            command_timeout=settings.redis_timeout,
            role="web-commit",
            max_connections=COMMIT_CONNECTIONS,
        )
        queue = make_queue(commit_redis, settings.queue_name)
        commit = GroupCommit(
            monitoring.counting_writer(
                tally, queue, settings.job_timeout, failed_ttl=failure_ttl(settings.retention_seconds)
            ),
            in_flight=COMMIT_CONNECTIONS,
            max_batch=settings.batch_max,
            min_interval=settings.commit_interval_ms / 1000,
            behind_interval=settings.commit_behind_ms / 1000,
            # A connection wait and a command, each bounded by redis_timeout: with the default
            # 2 s, every callback is answered within about 4 s, well inside Twilio's 15 s.
            answer_within=2 * settings.redis_timeout,
        )
        store = StoreHandle(settings, command_timeout=settings.redis_timeout, role="web-store", queue=redis)
        # The live page's feed blocks on the change stream for BLOCK seconds at a time: a client
        # of its own, whose command timeout allows that, with one connection, held only while a
        # page is open (README, "Connection budget").
        feed_redis = connect(
            settings,
            command_timeout=livefeed.BLOCK + settings.redis_timeout,
            role="web-live",
            max_connections=1,
        )
        feed_store = StoreHandle(
            settings,
            command_timeout=livefeed.BLOCK + settings.redis_timeout,
            role="web-live",
            queue=feed_redis,
        )
        feed = livefeed.LiveFeed(Reader(feed_store, stuck_after=settings.stuck_after))
        resources = Resources(
            settings=settings,
            redis=redis,
            store=store,
            commit=commit,
            keyring=keyring,
            trusted=trusted,
            rejections=RejectionLog(),
            reader=Reader(store, stuck_after=settings.stuck_after),
            feed=feed,
        )
        flusher = asyncio.create_task(_flush_every(request_log, LOG_FLUSH_INTERVAL))
        # Counts no batch carried (refusals, the last batch's 204s): on the read pool, once a
        # second at most.
        counts = asyncio.create_task(monitoring.flush_counts_every(tally, redis))
        # Everything allocated so far lives as long as the process: keep the collector from
        # walking it again and again while requests churn through short-lived objects, and let
        # those pile up a little longer between young collections (a callback allocates a few
        # hundred objects; the default threshold of 700 collects every other request or so).
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        try:
            yield {STATE_KEY: resources}
        finally:
            await commit.aclose()
            await feed.aclose()
            feed_store.close()
            feed_redis.close()
            flusher.cancel()
            counts.cancel()
            await monitoring.final_counts(tally, redis)
            request_log.flush()
            store.close()
            redis.close()
            commit_redis.close()

    app = Starlette(
        routes=[
            Route("/calls", readapi.list_calls, methods=["GET"]),
            Route("/calls/{sid}", readapi.get_call, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *dashboard.routes(),
            Route("/metrics", monitoring.metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={
            RequestRejected: handle_error,
            RedisError: handle_error,
            UnreadableValue: handle_error,
        },
        lifespan=lifespan,
    )
    return Receiver(app, request_log, tally)


async def healthz(request: Request) -> Response:
    """The process is up; touches nothing else."""
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """200 ``ready`` when Redis takes writes; 503 otherwise: unreachable (the usual 503 answer), or
    full, which a PING does not show: ``maxmemory`` reached under ``noeviction`` refuses every
    write, so every callback is answered 503 (README, "Failure modes")."""
    full = await run_in_threadpool(redis_full, Resources.of(request).redis)
    if full is not None:
        return PlainTextResponse(f"not ready: {full}", status_code=503)
    return PlainTextResponse("ready")


def redis_full(redis: Redis) -> str | None:
    """Why Redis refuses writes for lack of memory, or ``None`` if it does not. One INFO round trip;
    raises ``RedisError`` if Redis cannot be reached. A Redis that forbids INFO (some managed
    services rename it) is only PINGed."""
    memory = redis_memory(redis)
    if memory is None:
        redis.ping()
        return None
    return memory.reason() if memory.full else None


# -- errors to HTTP: the only place ------------------------------------------------------------


def error_answer(exc: Exception, settings: Settings) -> tuple[RequestRejected, PlainTextResponse]:
    """The refusal ``exc`` stands for, and its answer: the error's own status code and headers.

    A Redis error is a :class:`StoreUnavailable`: fail closed, a callback that could not be
    stored gets 503 with Retry-After (the configured one unless the error names its own), never
    2xx. So is a stored value this version cannot decode (:class:`UnreadableValue`: written by a
    newer callstate during a rolling upgrade); the log says which. Anything else is a bug and is
    not handled here.
    """
    if isinstance(exc, RequestRejected):
        rejected = exc
    else:
        # The error path only: a TLS verification failure names the setting that fixes it.
        cause = describe_error(exc) if isinstance(exc, RedisError) else f"{type(exc).__name__}: {exc}"
        rejected = StoreUnavailable(cause=cause)
    headers = rejected.headers
    if isinstance(rejected, StoreUnavailable) and "Retry-After" not in headers:
        headers = {**headers, "Retry-After": str(settings.retry_after)}
    answer = PlainTextResponse(rejected.reason, status_code=rejected.status_code, headers=headers)
    return rejected, answer


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler for the read API and the probes."""
    rejected, answer = error_answer(exc, Resources.of(request).settings)
    _note_reason(request.scope, rejected)
    return answer


def _note_reason(scope: Scope, rejected: RequestRejected) -> None:
    detail = rejected.reason
    if isinstance(rejected, StoreUnavailable) and rejected.cause:
        detail = f"{detail}: {rejected.cause}"
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
    Skipping Starlette's router and middleware saves CPU on every callback (bench/RESULTS.md, "How
    it got there").

    Every request gets one log line here: method, path (never the query: GET callbacks carry phone
    numbers there), status, milliseconds, and what the endpoint noted (call SID, reason). Every
    callback's answer is counted in ``tally`` (:mod:`receiver.monitoring` writes the counts).
    """

    def __init__(self, app: Starlette, lines: LineBuffer, tally: Tally) -> None:
        self.app = app
        self.lines = lines
        self.tally = tally
        self.callbacks = {
            "/twilio/call-status": CallbackEndpoint("call"),
            "/twilio/recording-status": CallbackEndpoint("recording"),
        }
        self._accepted = {
            endpoint: callback_field(ENDPOINTS[endpoint.kind], 204) for endpoint in self.callbacks.values()
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
        resources = Resources.of(scope)
        try:
            if scope["method"] not in CALLBACK_METHODS:
                raise MethodNotAllowed("callbacks are GET or POST", allow=CALLBACK_METHODS)
            await endpoint(resources, scope, receive, send)
        except (RequestRejected, RedisError) as exc:
            rejected, answer = error_answer(exc, resources.settings)
            _note_reason(scope, rejected)
            if isinstance(rejected, InvalidSignature):
                self.tally.add(signature_field(rejected.code))
            self.tally.add(callback_field(ENDPOINTS[endpoint.kind], rejected.status_code))
            await answer(scope, receive, send)
            return rejected.status_code
        self.tally.add(self._accepted[endpoint])
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
