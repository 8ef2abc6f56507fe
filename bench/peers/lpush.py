"""The naive design with RQ replaced by one async ``LPUSH`` per callback (redis.asyncio)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

#: The list the callbacks go to (nothing consumes it during the bench).
LIST = "bench:callbacks"


async def callback(request: Request) -> Response:
    """Validate, LPUSH the parameters as JSON, 204 (403 on a bad signature)."""
    form = await request.form()
    validator: RequestValidator = request.app.state.validator
    if not validator.validate(str(request.url), form, request.headers.get("x-twilio-signature", "")):
        return Response(status_code=403)
    redis: Redis = request.app.state.redis
    await redis.lpush(LIST, orjson.dumps(list(form.multi_items())))
    return Response(status_code=204)


def create_app() -> Starlette:
    """The app (run with ``uvicorn --factory``); Redis and the token come from the environment."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(os.environ["REDIS_URL"])
        app.state.validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
        yield
        await app.state.redis.aclose()

    return Starlette(routes=[Route("/twilio/{kind}", callback, methods=["POST"])], lifespan=lifespan)
