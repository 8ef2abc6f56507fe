"""Logs: one structured line per request or job, on stdout.

JSON (one object per line) when stdout is not a terminal, ``key=value`` when it is. Callers log an
event name and explicit fields (:func:`log_event`); nothing logs a whole request, a form or a
settings object, so phone numbers and tokens never reach a log line by accident.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final, TextIO

import orjson

_FIELDS: Final = "callstate_fields"


class JSONFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "event": ..., **fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, _FIELDS, {}))
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return orjson.dumps(line, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``12:00:00 info  callstate.web request method=POST status=204 ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {})
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{clock} {record.levelname.lower():5} {record.name} {record.getMessage()} {pairs}"
        if record.exc_info and record.exc_info[0] is not None:
            text += f" error={record.exc_info[0].__name__}: {record.exc_info[1]}"
        return text.rstrip()


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def formatter(fmt: str = "auto", stream: TextIO | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` (``auto`` picks JSON unless ``stream`` is a terminal)."""
    stream = stream if stream is not None else sys.stdout
    if fmt == "console" or (fmt == "auto" and stream.isatty()):
        return ConsoleFormatter()
    return JSONFormatter()


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    """Send every logger (callstate, uvicorn, rq) to stdout through one formatter."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter(fmt, sys.stdout))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rq", "rq.worker"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log ``event`` with ``fields`` as one structured line. Fields must never hold PII or secrets."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})


def dict_config(fmt: str = "auto", level: str = "INFO") -> dict[str, Any]:
    """The same set-up as :func:`configure`, as a ``logging.config`` dict for uvicorn, which
    applies it in every worker process it starts."""
    chosen = type(formatter(fmt)).__name__
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"callstate": {"()": f"{__name__}.{chosen}"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "callstate",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
