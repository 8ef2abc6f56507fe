"""The naive design: ``request.form()``, twilio's ``RequestValidator``, one RQ ``enqueue`` per request.

What a developer writes first from the Starlette, Twilio and RQ docs: the blocking enqueue runs in
Starlette's thread pool (so the event loop never blocks), one job and one Redis round trip per
callback, pickled by RQ's default serializer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import Redis
from rq import Queue
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from bench.peers.noop import NOOP, QUEUE


async def callback(request: Request) -> Response:
    """Validate, enqueue, 204 (403 on a bad signature)."""
    form = await request.form()
    validator: RequestValidator = request.app.state.validator
    if not validator.validate(str(request.url), form, request.headers.get("x-twilio-signature", "")):
        return Response(status_code=403)
    queue: Queue = request.app.state.queue
    await run_in_threadpool(queue.enqueue, NOOP, dict(form))
    return Response(status_code=204)


def create_app() -> Starlette:
    """The app (run with ``uvicorn --factory``); Redis and the token come from the environment."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = Redis.from_url(os.environ["REDIS_URL"])
        app.state.queue = Queue(QUEUE, connection=redis)
        app.state.validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
        yield
        redis.close()

    return Starlette(routes=[Route("/twilio/{kind}", callback, methods=["POST"])], lifespan=lifespan)
