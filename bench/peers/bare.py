"""The ceiling: bare Starlette answering 204 to every callback without reading it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def callback(request: Request) -> Response:
    """204, no work: what uvicorn + Starlette cost by themselves."""
    return Response(status_code=204)


def create_app() -> Starlette:
    """The app (run with ``uvicorn --factory``)."""
    return Starlette(routes=[Route("/twilio/{kind}", callback, methods=["POST"])])
