"""Flask with the ``validate_twilio_request`` decorator of Twilio's docs and RQ, under gunicorn.

Run as ``gunicorn 'bench.peers.flask_rq:create_app()'``; the process model (workers, threads) is
chosen by the bench (see :data:`bench.designs.DESIGNS`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, abort, current_app, request
from redis import Redis
from rq import Queue
from twilio.request_validator import RequestValidator

from bench.peers.noop import NOOP, QUEUE

View = Callable[..., Any]


def validate_twilio_request(view: View) -> View:
    """403 unless X-Twilio-Signature matches (the decorator from Twilio's Flask tutorial)."""

    @wraps(view)
    def decorated(*args: Any, **kwargs: Any) -> Any:
        validator: RequestValidator = current_app.config["VALIDATOR"]
        if not validator.validate(request.url, request.form, request.headers.get("X-Twilio-Signature", "")):
            abort(403)
        return view(*args, **kwargs)

    return decorated


def create_app() -> Flask:
    """The app; Redis and the token come from the environment."""
    app = Flask(__name__)
    app.config["VALIDATOR"] = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    queue = Queue(QUEUE, connection=Redis.from_url(os.environ["REDIS_URL"]))

    @app.post("/twilio/<kind>")
    @validate_twilio_request
    def callback(kind: str) -> tuple[str, int]:
        queue.enqueue(NOOP, request.form.to_dict())
        return "", 204

    return app
