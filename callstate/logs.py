"""Logs: one structured line per request or job, on stdout.

JSON (one object per line) when stdout is not a terminal, ``key=value`` when it is. Callers log an
event name and explicit fields (:func:`log_event`); nothing logs a whole request, a form or a
settings object, so phone numbers and tokens never reach a log line by accident.

The web process's per-request line goes through :class:`LineBuffer` instead of the logging module:
the same line, written in batches, for a fraction of the CPU of a ``logging`` record, which also
writes and flushes each line (bench/RESULTS.md, "Micro-measurements").
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

import orjson

_FIELDS: Final = "callstate_fields"
#: What makes a console value ambiguous: it would split into two fields or need unquoting.
_NOT_PLAIN: Final = re.compile(r'[\s"=\\]')


def render_json(created: float, level: str, logger: str, event: str, fields: Mapping[str, object]) -> str:
    """``{"ts": ..., "level": ..., "logger": ..., "event": ..., **fields}``."""
    line: dict[str, object] = {"ts": _iso(created), "level": level, "logger": logger, "event": event}
    line.update(fields)
    return orjson.dumps(line, default=str).decode()


def render_console(created: float, level: str, logger: str, event: str, fields: Mapping[str, object]) -> str:
    """``12:00:00 info  callstate.web request method=POST status=204 ...`` for humans.

    Always one line, whatever the fields hold: a value a client chose (a path with ``%0A`` in it)
    must not start a line of its own that reads like ours. See :func:`console_value`.
    """
    pairs = " ".join(f"{key}={console_value(value)}" for key, value in fields.items())
    clock = time.strftime("%H:%M:%S", time.localtime(created))
    # The event is a message (uvicorn's have spaces): quoted only when it could break the line.
    message = event if event.isprintable() else json.dumps(event)
    return f"{clock} {level:5} {logger} {message} {pairs}".rstrip()


def console_value(value: object) -> str:
    """``value`` as written in a console line: as is when it is plain (printable, no space, quote,
    ``=`` or backslash), else as a JSON string literal in ASCII, which escapes line breaks of every
    kind (``\\n``, ``\\u2028``, ``\\x85``) and control characters, and keeps the text readable."""
    text = str(value)
    if text.isprintable() and not _NOT_PLAIN.search(text):
        return text
    return json.dumps(text)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = dict(getattr(record, _FIELDS, {}))
    if record.exc_info and record.exc_info[0] is not None:
        fields["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
    return fields


class JSONFormatter(logging.Formatter):
    """Log records as :func:`render_json` lines."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return render_json(record.created, level, record.name, record.getMessage(), _fields(record))


class ConsoleFormatter(logging.Formatter):
    """Log records as :func:`render_console` lines."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return render_console(record.created, level, record.name, record.getMessage(), _fields(record))


class LineBuffer:
    """Structured lines for one logger, collected in memory and written by :meth:`flush`.

    The owner flushes it periodically (the web app every 100 ms) and when it stops; a line is
    also flushed at once when the buffer passes :data:`MAX_BUFFER` characters. Not thread-safe:
    use it from one event loop.
    """

    MAX_BUFFER: Final = 64 * 1024

    def __init__(self, logger: str, fmt: str = "auto", stream: TextIO | None = None) -> None:
        self.logger = logger
        self.stream = stream if stream is not None else sys.stdout
        self._render = render_console if _console(fmt, self.stream) else render_json
        self._lines: list[str] = []
        self._size = 0

    def emit(self, event: str, level: str = "info", **fields: object) -> None:
        """Add one line; ``fields`` must never hold PII or secrets."""
        line = self._render(time.time(), level, self.logger, event, fields)
        self._lines.append(line)
        self._size += len(line)
        if self._size > self.MAX_BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


def _iso(created: float) -> str:
    return f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    # Thousands of lines share a second: format it once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _console(fmt: str, stream: TextIO) -> bool:
    return fmt == "console" or (fmt == "auto" and stream.isatty())


def formatter(fmt: str = "auto", stream: TextIO | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` (``auto`` picks JSON unless ``stream`` is a terminal)."""
    return ConsoleFormatter() if _console(fmt, stream or sys.stdout) else JSONFormatter()


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
