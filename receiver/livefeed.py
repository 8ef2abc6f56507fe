"""The live feed: the change stream read once per web process and fanned out to every open page.

Heroku's smallest Redis allows 20 connections, so pages must not each hold a blocking read:
:class:`LiveFeed` runs one :class:`~callstate.reader.Follower` (one connection) while at least
one page listens, and none at all otherwise; every page gets each batch of changes through its
own bounded queue. The follower blocks in a thread of its own, so neither the event loop nor the
thread pool that the read API shares ever waits on it, and nothing here runs on the callback
path.

:func:`event_stream` is one page's Server-Sent Events: first the changes it missed (after the
position it names: ``Last-Event-ID`` when the browser reconnects), then the live ones, each
stream entry once, with a comment line at least every ``keepalive`` seconds so that routers
(Heroku's cuts idle connections at 55 s) keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
import orjson
from anyio import CapacityLimiter
from redis import Redis

from callstate.reader import Change, Follower, Reader, advance, is_after

logger = logging.getLogger("callstate.web")

#: Seconds one blocking read of the stream waits; also how long an idle feed lingers after its
#: last page closed.
BLOCK: Final = 5.0
#: At least this many seconds between two reads of the stream: a busy stream makes batches
#: larger, not wake-ups more frequent.
INTERVAL: Final = 0.25
#: Stream entries one read takes. With INTERVAL, the feed follows up to 1,000 changes a second
#: (a call makes about four; Twilio's high-volume guidance is 10,000 calls a minute, some 700
#: changes a second). A read that comes back full means the stream moves faster: the feed then
#: skips to its end and tells the pages to reload their view (at most once a second each), so
#: its cost stays bounded whatever the traffic.
BATCH: Final = 250
#: Batches a page may have waiting; a page slower than the stream is told to reload instead.
QUEUE: Final = 64
#: The most missed entries replayed to a page that comes back; beyond, it reloads its view.
CATCH_UP: Final = 2000
#: Seconds between keep-alive comments (Heroku's router closes a connection idle for 55 s).
KEEPALIVE: Final = 10.0


@dataclass(frozen=True, slots=True)
class Batch:
    """New changes, in stream order (repeats already dropped by the per-call version rule), and
    their event, encoded once for every page."""

    changes: list[Change]
    event: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """Whether the feed reaches Redis."""

    connected: bool


@dataclass(frozen=True, slots=True)
class Reset:
    """The page lost batches (it read slower than the stream moved): it must reload its view."""


#: What a page's queue carries; None means the feed stopped and the page's stream ends.
Message = Batch | Status | Reset | None


@dataclass(eq=False, slots=True)
class Subscription:
    """One page's place in the feed: a bounded queue of messages."""

    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE))

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            # Never buffer without bound for a page that does not read: drop its backlog and
            # tell it to reload instead (or that the feed ended).
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Reset() if message is not None else None)


class LiveFeed:
    """The process's one reader of the change stream, shared by every open page.

    ``reader`` should use a client whose socket timeout exceeds :data:`BLOCK`, since its reads
    block that long.
    """

    def __init__(
        self, reader: Reader, *, block: float = BLOCK, interval: float = INTERVAL, batch: int = BATCH
    ) -> None:
        self.reader = reader
        self.block = block
        self.interval = interval
        self.batch = batch
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        # The follower's reads get a thread of their own, outside the shared thread pool.
        self._limiter = CapacityLimiter(1)

    @property
    def running(self) -> bool:
        return self._task is not None

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """A subscription to every batch read from now on, for the duration of the block.

        Once it is entered, the feed's position is fixed: every stream entry after the current
        end of the stream reaches the subscription. Raises RedisError when Redis cannot be
        reached to find that position.
        """
        subscription = Subscription()
        if self._task is None:
            position = await anyio.to_thread.run_sync(self.reader.last_position, limiter=self._limiter)
            if self._task is None:  # no other page started it meanwhile
                self._task = asyncio.create_task(self._run(Follower(self.reader, position)))
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    async def aclose(self) -> None:
        """Stop reading (the app is shutting down)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, follower: Follower) -> None:
        connected = True
        try:
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                changes = await anyio.to_thread.run_sync(
                    self._poll, follower, limiter=self._limiter, abandon_on_cancel=True
                )
                if not self._subscribers:
                    # Checked and cleared with no await in between: a page arriving now starts
                    # a new feed from the end of the stream. The idle connection is closed too
                    # (closing a socket does not block): no page open, no connection held.
                    self._task = None
                    if isinstance(self.reader.redis, Redis):
                        self.reader.redis.connection_pool.disconnect()
                    return
                if follower.connected != connected:
                    connected = follower.connected
                    logger.warning("live feed %s", "reconnected" if connected else "lost Redis")
                    self._offer(Status(connected))
                if follower.saturated:
                    # Faster than the feed follows: skip to the end; pages reload their view.
                    await anyio.to_thread.run_sync(self._skip, follower, limiter=self._limiter)
                    self._offer(Reset())
                elif changes:
                    latest = _latest(changes)
                    self._offer(Batch(latest, _changes_event(latest, latest[-1].id)))
                await asyncio.sleep(self.interval - (loop.time() - started))
        except Exception:
            # A bug, not Redis (the follower rides out lost connections): end every page's
            # stream; their browsers reconnect with Last-Event-ID and start a new feed.
            logger.exception("live feed stopped")
            self._task = None
            self._offer(None)

    def _poll(self, follower: Follower) -> list[Change]:
        return follower.poll(block=self.block, count=self.batch)

    def _skip(self, follower: Follower) -> None:
        follower.position = self.reader.last_position()

    def _offer(self, message: Message) -> None:
        for subscription in self._subscribers:
            subscription.offer(message)


def _latest(changes: list[Change]) -> list[Change]:
    """Only the last change of each call, in stream order: a page shows the latest state."""
    last = {change.call_sid: n for n, change in enumerate(changes)}
    return [change for n, change in enumerate(changes) if last[change.call_sid] == n]


def _past(position: str, changes: list[Change]) -> str:
    """``position`` moved past ``changes`` in each of their buckets (never backwards)."""
    buckets = max(len(position.split(",")), len(changes[-1].id.split(",")))
    for change in changes:
        position = advance(position, change, buckets)
    return position


def sse(event: str, data: object, entry_id: str | None = None) -> bytes:
    """One Server-Sent Event (WHATWG HTML, "Server-sent events"): data is JSON on one line."""
    head = f"id: {entry_id}\n" if entry_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def _changes_event(changes: list[Change], position: str) -> bytes:
    rows = [[c.call_sid, c.version, c.status, c.final] for c in changes]
    return sse("changes", rows, position)


async def event_stream(
    subscription: Subscription,
    read_missed: Callable[[str], list[Change]],
    after: str | None,
    *,
    keepalive: float = KEEPALIVE,
    catch_up: int = CATCH_UP,
) -> AsyncIterator[bytes]:
    """One page's events: ``retry``, then what it missed after ``after``, then live batches.

    ``read_missed(after)`` reads up to ``catch_up + 1`` entries after ``after`` (blocking: it runs
    on a thread); more than ``catch_up`` means the page is told to ``reset`` (reload its view)
    instead. Each entry is sent once: live batches skip what the catch-up already sent.
    Events: ``changes`` (``[[CallSid, version, status, final], ...]``, the id is the last
    entry's), ``reset``, ``status`` (``{"connected": bool}``) and ``: keep-alive`` comments.
    """
    # Reconnect soon after a drop; the browser then sends Last-Event-ID.
    yield b"retry: 2000\n\n"
    # What was sent, per bucket of the change stream (see callstate.reader, positions).
    sent = after
    if after is not None:
        missed = await anyio.to_thread.run_sync(read_missed, after)
        if len(missed) > catch_up:
            yield sse("reset", {"reason": "too many changes missed"})
        elif missed:
            # Repeats included: the page applies the per-call version rule itself.
            sent = missed[-1].id
            yield _changes_event(missed, sent)
    while True:
        try:
            message = await asyncio.wait_for(subscription.queue.get(), keepalive)
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if message is None:  # the feed stopped: end, and the browser reconnects
            return
        if isinstance(message, Status):
            yield sse("status", {"connected": message.connected})
            continue
        if isinstance(message, Reset):
            yield sse("reset", {"reason": "the page fell behind"})
            continue
        changes = [c for c in message.changes if sent is None or is_after(c, sent)]
        if changes:
            sent = changes[-1].id if sent is None else _past(sent, changes)
            # Usually all of it (only after a catch-up can the first few be old): the shared bytes.
            yield message.event if len(changes) == len(message.changes) else _changes_event(changes, sent)
