"""Group commit: many requests, one Redis round trip, and no request answered before Redis has it.

Every accepted callback becomes an item; :meth:`GroupCommit.submit` returns only once the batch that
holds the item has been written (one RQ job per batch), and raises :class:`StoreUnavailable` if
that write failed, so the caller answers 503 and Twilio may retry. Fail closed: there is no path on
which an item is acknowledged but not stored.

Batches form by themselves: while one batch is being written, new items wait for the next one. At
low load a batch is one item and costs one round trip; under load a batch holds whatever arrived
during the previous write, up to ``max_batch``.

Pacing: writes are spaced so that each job carries enough items for the workers to keep up; when
the next batch may go is decided by :class:`receiver.pacing.Pacing`, a pure function of the clock,
given the backlog the last write reported, and asked again whenever an item arrives.

The write itself is blocking code (RQ and redis-py's sync client), run on dedicated threads so
that the event loop never blocks; two writes may be in flight at once.

Answer time. Each step that waits on Redis has its timeout (a free connection, each command), but
an item can wait on several in a row: for a write slot while both writes in flight hang, then for
its own write. So the total is bounded instead: ``answer_within`` seconds after :meth:`submit`, an
item whose write has not succeeded gets :class:`StoreUnavailable` (503), and if it is still
waiting for a batch it is withdrawn, never written. A write already under way may still land
after the 503; the retry that the 503 invites is then a duplicate, which the store ignores.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.exceptions import RedisError

from callstate.connection import describe_error
from callstate.errors import StoreUnavailable
from callstate.logs import log_event
from receiver.pacing import Pacing

logger = logging.getLogger("callstate.web")

#: Writes a batch; returns how many jobs are waiting in the queue afterwards, if it knows.
Writer = Callable[[Sequence[dict[str, Any]]], int | None]


class GroupCommit:
    """Batches items for ``writer`` (blocking; called on a worker thread with up to ``max_batch``
    items). Create and use it inside one running event loop; :meth:`aclose` drains it."""

    def __init__(
        self,
        writer: Writer,
        *,
        max_batch: int = 256,
        min_interval: float = 0.0,
        behind_interval: float = 0.0,
        behind_batch: int = 16,
        in_flight: int = 2,
        answer_within: float | None = None,
    ) -> None:
        self._writer = writer
        self._max_batch = max_batch
        self._pacing = Pacing(max_batch, min_interval, behind_interval, behind_batch)
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        # Two writes may be in flight: the next batch goes out while the previous one waits for
        # Redis's fsync, so the fsync latency does not bound the throughput. Order does not
        # matter: jobs are applied in any order to the same result.
        self._slots = asyncio.Semaphore(in_flight)
        self._writes: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="callstate-commit")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")
        # (deadline, future) of every submitted item, in submission order, so in deadline order.
        self._deadlines: collections.deque[tuple[float, asyncio.Future[None]]] = collections.deque()
        self._answer_within = answer_within
        self._watchdog = (
            None
            if answer_within is None
            else asyncio.get_running_loop().create_task(
                self._expire(answer_within), name="group-commit-watchdog"
            )
        )
        #: Jobs waiting in the queue after the last write (0 until a writer says otherwise).
        self.backlog = 0

    @property
    def pending(self) -> int:
        """Items submitted and not yet handed to the writer."""
        return len(self._pending)

    async def submit(self, item: dict[str, Any]) -> None:
        """Return once ``item`` is in Redis; raise :class:`StoreUnavailable` if it could not be."""
        if self._closing:
            raise StoreUnavailable("shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        if self._answer_within is not None:
            self._deadlines.append((loop.time() + self._answer_within, future))
        self._wakeup.set()
        await future

    async def _expire(self, within: float) -> None:
        """Fail the items not written ``within`` seconds after their submission (checked every
        ``within / 16`` seconds: a few hundred milliseconds of slack at most)."""
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        while True:
            await asyncio.sleep(within / 16)
            now = loop.time()
            expired = 0
            while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
                _, future = deadlines.popleft()
                if not future.done():
                    future.set_exception(StoreUnavailable(f"not written within {within:g} s"))
                    expired += 1
            if expired:
                # Withdraw the expired items that no batch has taken yet.
                self._pending = [(item, f) for item, f in self._pending if not f.done()]
                log_event(logger, "enqueue_expired", logging.WARNING, events=expired, within_s=within)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_write = float("-inf")
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._pace(loop, last_write)
                await self._slots.acquire()
                last_write = loop.time()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                write = loop.create_task(self._write(loop, batch))
                self._writes.add(write)
                write.add_done_callback(self._written)
            if self._closing:
                await asyncio.gather(*self._writes)
                return

    def _written(self, write: asyncio.Task[None]) -> None:
        self._writes.discard(write)
        self._slots.release()

    async def _pace(self, loop: asyncio.AbstractEventLoop, last_write: float) -> None:
        """Wait until :class:`Pacing` says the batch's time has come, asking again whenever an
        item arrives or the wait ends; closing ends it at once (what is pending is written)."""
        while not self._closing:
            delay = self._pacing.delay(loop.time(), last_write, len(self._pending), self.backlog)
            if delay <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    async def _write(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]
    ) -> None:
        items = [item for item, _ in batch]
        try:
            backlog = await loop.run_in_executor(self._executor, self._writer, items)
        except Exception as exc:  # every failure means "not stored": 503, never 2xx
            # A TLS verification failure names the setting that fixes it.
            error = describe_error(exc) if isinstance(exc, RedisError) else f"{type(exc).__name__}: {exc}"
            log_event(logger, "enqueue_failed", logging.WARNING, events=len(items), error=error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(error))
            return
        self.backlog = backlog or 0
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def aclose(self) -> None:
        """Write what is pending, then stop. Requests arriving meanwhile get 503."""
        self._closing = True
        self._wakeup.set()
        await self._task
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        self._executor.shutdown(wait=True)
