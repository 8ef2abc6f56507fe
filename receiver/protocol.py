"""The web process's HTTP/1.1 connections: uvicorn's httptools protocol, with limits for slow and
greedy clients (README.md, "Slow and greedy clients").

uvicorn with httptools leaves three doors open that a receiver reachable from the internet must
close; :class:`LimitedHttpProtocol` closes them:

* Time. uvicorn's keep-alive timer runs only between requests: a connection that sends nothing, or
  dribbles its request a byte at a time, stays open as long as its client likes (and a dribbled
  callback is finally answered). Here every request must arrive whole within ``request_timeout``
  seconds of the connection being ready for it (opened, or its previous response sent). A client
  that sent part of a request then gets 408; one that sent nothing is closed silently, as an idle
  keep-alive connection is.
* Header size. httptools has no limit and grows a long header by concatenation, so its CPU cost is
  quadratic in the header's size. Here the request line and headers may take
  :data:`MAX_HEADER_BYTES`; bytes past that never reach the parser, and the client gets 431.
* File descriptors. uvicorn's ``limit_concurrency`` answers 503 to requests while too many
  connections are open, but each open connection holds a descriptor, and when the process runs out
  ``accept()`` fails: libuv then closes new connections unanswered and nothing is logged (uvloop
  even stops listening if the failure reaches it). Here a connection that arrives with fewer than
  :data:`FD_RESERVE` descriptors left is closed at once, and that is logged.

A refusal (408, 431) is written, the connection half-closed and its reading stopped; it is closed
:data:`LINGER` seconds later. Closing a socket with unread input sends a reset, which would
destroy the answer before the client reads it. Refusals are logged at most once per
:data:`LOG_EVERY` seconds per process, with the number since the last line, so that a flood of bad
clients cannot flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from callstate.logs import log_event
from receiver.resources import Resources

logger = logging.getLogger("callstate.web")

#: The request line and headers of one request. A Twilio callback's are under 2 KiB, a GET
#: callback's query included (docs/contracts.md, "Callback answers"); 16 KiB is also h11's
#: default limit.
MAX_HEADER_BYTES: Final = 16 * 1024
#: Descriptors kept free for what is not a client connection: the Redis pools, the log, the
#: listening socket, the event loop's own.
FD_RESERVE: Final = 64
#: Seconds a refused connection stays half-closed, so that its client reads the answer.
LINGER: Final = 5.0
#: At most one log line per kind of refusal per this many seconds.
LOG_EVERY: Final = 10.0


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


TIMED_OUT: Final = _answer(408, "Request Timeout", "the request did not arrive in time")
TOO_LARGE: Final = _answer(
    431, "Request Header Fields Too Large", f"request line and headers over {MAX_HEADER_BYTES} bytes"
)


class RefusalLog:
    """Counts refusals by kind and logs each kind at most once per :data:`LOG_EVERY` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def refused(self, kind: str, **fields: object) -> None:
        """Count one refusal of ``kind``; log a line now if none was logged lately."""
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = self._clock()
        if now - self._logged.get(kind, float("-inf")) >= LOG_EVERY:
            log_event(logger, "refused", logging.WARNING, kind=kind, count=self._counts[kind], **fields)
            self._logged[kind] = now
            self._counts[kind] = 0


#: One per process (uvicorn makes a protocol object per connection).
REFUSALS: Final = RefusalLog()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring; ``callstate web``
    passes it as uvicorn's ``http``. ``request_timeout`` comes from the app's settings, through
    the lifespan state uvicorn hands every protocol object."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.request_timeout = Resources.of({"state": app_state}).settings.request_timeout
        self._deadline: asyncio.TimerHandle | None = None
        #: When the connection became ready for the request it is waiting for (loop time).
        self._ready_at = 0.0
        #: Waiting for a request to arrive whole (not answering one).
        self._waiting = False
        #: Reading a request's line and headers (or waiting for the next request).
        self._in_head = True
        self._head_bytes = 0
        self._heads_done = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        descriptors = _descriptors_left(transport)
        if descriptors is not None and descriptors < FD_RESERVE:
            REFUSALS.refused("file_descriptors", left=descriptors, reserve=FD_RESERVE)
            self._refused = True
            transport.abort()  # the descriptor is what is short: free it now, unanswered
            return
        self._ready()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_head:
            super().data_received(data)
            return
        room = MAX_HEADER_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed the parser only what the limit allows; if the headers do not end within it, refuse.
        heads_done = self._heads_done
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing() or self._refused:
            return
        if self._heads_done == heads_done:
            self._refuse(TOO_LARGE, "header_too_large")
            return
        self.data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads_done += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The request is whole: what the app does with it is bounded by its own timeouts.
        self._waiting = False
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._ready()

    def _ready(self) -> None:
        """The connection waits for a request from now on. The timer is not re-armed for each
        request (bench/RESULTS.md, "Micro-measurements"): it is armed if none is, and when it
        fires it looks at the request it finds."""
        self._ready_at = self.loop.time()
        self._waiting = True
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._check_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check_deadline(self) -> None:
        self._deadline = None
        if not self._waiting or self._refused or self.transport.is_closing():
            return  # answering a request: _ready() arms the timer again after the response
        remaining = self._ready_at + self.request_timeout - self.loop.time()
        if remaining > 0:
            self._deadline = self.loop.call_later(remaining, self._check_deadline)
            return
        if self._in_head and self._head_bytes == 0:
            self.transport.close()  # idle: nothing to answer, nothing unread
            return
        self._refuse(TIMED_OUT, "request_timeout")

    def _refuse(self, answer: bytes, kind: str) -> None:
        """Answer ``answer`` unless a response is already under way, then linger and close."""
        REFUSALS.refused(kind)
        self._refused = True
        self._disarm()
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            # The app may be waiting for the rest of the body: it reads a disconnect, so a
            # half-received callback is never stored, and whatever it answers goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        if answering or self.pipeline:
            self.transport.abort()
            return
        self.transport.write(answer)
        self.transport.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


def _descriptors_left(transport: asyncio.Transport) -> int | None:
    """How many descriptors the process may still open, judged by the new socket's number (the
    kernel hands out the lowest free one); ``None`` if the transport has no socket."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return int(soft) - 1 - int(sock.fileno())


def raise_descriptor_limit(connections: int) -> int:
    """Raise this process's soft descriptor limit (RLIMIT_NOFILE) towards what ``connections``
    served connections need, and return the new soft limit; log a warning if the hard limit
    (systemd's ``LimitNOFILE``, ``ulimit -Hn``) leaves less.

    Twice ``connections``, since connections past the limit are still accepted (and answered 503
    once their request arrives), plus :data:`FD_RESERVE`. Children (uvicorn's workers) inherit it.
    """
    wanted = 2 * connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < connections + FD_RESERVE:
        log_event(
            logger,
            "descriptor_limit_low",
            logging.WARNING,
            limit=soft,
            max_connections=connections,
            advice="raise LimitNOFILE (ulimit -n) or lower CALLSTATE_MAX_CONNECTIONS",
        )
    return int(soft)
