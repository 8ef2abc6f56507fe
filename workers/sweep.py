"""The sweep: the store's periodic housekeeping, run by every worker process under one shared lease.

One sweep does two bounded things: it asks Twilio about stuck calls (:mod:`workers.stuck`), then
prunes the index entries of expired calls (:mod:`workers.prune`). :func:`sweep` is one sweep with
time injected; :func:`sweep_once` runs it under the lease (:data:`callstate.keys.SWEEP_LOCK`), and
every worker runs a :class:`Sweeper` thread that calls it periodically, so the workers together
sweep about once per interval while any of them lives. A thread rather than an RQ job: REST
requests never wait behind callbacks in the queue nor hold one up, and there is no chain of
scheduled jobs to break. ``callstate sweep`` runs one sweep by hand.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from redis.exceptions import RedisError

from callstate import keys
from callstate.connection import StoreClient, StoreHandle, connect, connect_store
from callstate.counters import hincrby_all, sweep_field
from callstate.logs import log_event
from callstate.settings import Settings
from workers.prune import PRUNE_LIMIT, prune
from workers.store import Store
from workers.stuck import SWEPT, StuckCalls, ask_stuck
from workers.twilioapi import TwilioAPI

logger = logging.getLogger("callstate.sweep")

#: Seconds between sweeps, across all workers together.
SWEEP_INTERVAL: Final = 60
#: Seconds a Redis command of the sweep may take (pruning reads up to a thousand entries).
COMMAND_TIMEOUT: Final = 30

# Take the lease: ARGV[1] token, ARGV[2] lease ms, ARGV[3] '1' to take it over an 'idle' lease
# (a one-shot `callstate sweep`), '0' to respect it (the periodic sweeper). 1 if taken.
_ACQUIRE: Final = """
local current = redis.call('GET', KEYS[1])
if current and not (ARGV[3] == '1' and current == 'idle') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# End the lease if still ours: 'idle' for ARGV[2] more ms, so the next sweep waits for the interval.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], 'idle', 'PX', ARGV[2])
return 1
"""


@dataclass(slots=True)
class SweepResult(StuckCalls):
    """What one sweep did; the fields of its log line."""

    #: Calls whose index entries were pruned.
    pruned: int = 0

    def fields(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "asked": self.asked,
            "finalized": len(self.finalized),
            "still_active": self.still_active,
            "not_found": self.not_found,
            "failed": self.failed,
            "skipped": self.skipped,
            "stopped": self.stopped,
            "pruned": self.pruned,
        }


def sweep(
    store: Store,
    api: TwilioAPI | None,
    *,
    stuck_after: float,
    limit: int,
    now: Callable[[], float],
    prune_limit: int = PRUNE_LIMIT,
    budget: float | None = None,
) -> SweepResult:
    """One sweep: ask Twilio about stuck calls (unless ``api`` is ``None``), then prune the indexes.

    ``now`` gives Unix seconds. ``budget`` (seconds) stops the REST part early once spent. Safe to
    run concurrently with jobs; two sweeps at once would only ask some calls twice
    (:func:`sweep_once` prevents it).
    """
    started = now()
    result = SweepResult()
    # Asks older than stuck_after no longer hold anything back.
    store.redis.zremrangebyscore(SWEPT, "-inf", f"({started - stuck_after}")
    if api is not None and limit > 0:
        ask_stuck(store, api, result, stuck_after=stuck_after, limit=limit, now=now, budget=budget)
    if result.asked:
        # One round trip per sweep that asked anything (a minute apart at least).
        with store.redis.pipeline(transaction=False) as pipe:
            hincrby_all(pipe, {sweep_field(name): n for name, n in result.outcomes().items()})
            pipe.execute()
    if prune_limit > 0:
        result.pruned = prune(store, now=started, limit=prune_limit)
    log_event(logger, "sweep", logging.INFO, **result.fields(), ms=round((now() - started) * 1000, 1))
    return result


def sweep_once(
    settings: Settings,
    *,
    api: TwilioAPI | None,
    redis: StoreClient | None = None,
    now: Callable[[], float] = time.time,
    interval: float = SWEEP_INTERVAL,
    periodic: bool = False,
) -> SweepResult | None:
    """One sweep under the shared lease; ``None`` when another process holds it.

    The lease covers the longest sweep (``interval`` of REST requests, one more request timeout,
    the pruning); when the sweep ends it turns ``idle`` for the rest of ``interval``, so all the
    workers together sweep about once per interval. A ``periodic`` caller respects an idle lease;
    a one-shot caller (``callstate sweep``) does not. Without ``api`` (no credentials configured)
    the sweep only prunes.
    """
    client = redis or connect_store(settings, command_timeout=COMMAND_TIMEOUT, role="sweep")
    try:
        store = Store(client, settings.retention_seconds, settings.max_events_per_call)
        token = uuid.uuid4().hex
        request_timeout = api.timeout if api is not None else 0
        lease_ms = int((interval + 2 * request_timeout + 30) * 1000)
        acquire = client.register_script(_ACQUIRE)
        if not acquire(keys=[keys.SWEEP_LOCK], args=[token, lease_ms, "0" if periodic else "1"]):
            return None
        started = now()
        try:
            return sweep(
                store,
                api,
                stuck_after=settings.stuck_after,
                limit=settings.sweep_limit,
                now=now,
                budget=interval,
            )
        finally:
            rest_ms = max(1, int((interval - (now() - started)) * 1000))
            client.register_script(_RELEASE)(keys=[keys.SWEEP_LOCK], args=[token, rest_ms])
    finally:
        if redis is None:
            client.close()


class Sweeper:
    """Runs :func:`sweep_once` every ``interval`` seconds in a daemon thread of a worker process.

    Every worker runs one; the lease makes them sweep about once per interval together, and the
    sweep goes on while any worker lives. A thread rather than an RQ job: REST requests never wait
    behind callbacks in the queue nor hold one up, and there is no chain of scheduled jobs to break.
    Errors (Redis down, a bug) are logged and the next tick tries again.
    """

    def __init__(
        self, settings: Settings, *, interval: float = SWEEP_INTERVAL, api: TwilioAPI | None = None
    ) -> None:
        """``api`` defaults to the settings' credentials (a bad ``TWILIO_API_BASE`` is a
        :class:`~callstate.errors.ConfigError` here, at start-up)."""
        self.settings = settings
        self.interval = interval
        self.api = api if api is not None else TwilioAPI.from_settings(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="callstate-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait ``timeout`` seconds at most (a REST request in flight
        may take that long; the thread is a daemon, so it never holds the process up)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        queue = connect(self.settings, command_timeout=COMMAND_TIMEOUT, role="sweep")
        store = StoreHandle(self.settings, command_timeout=COMMAND_TIMEOUT, role="sweep", queue=queue)
        try:
            while not self._stop.is_set():
                try:
                    client = store.client()
                except RedisError as exc:  # the store is down: the next tick tries again
                    log_event(logger, "sweep_failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
                else:
                    self.tick(client)
                self._stop.wait(self.interval)
        finally:
            store.close()
            queue.close()

    def tick(self, redis: StoreClient) -> SweepResult | None:
        """One attempt to sweep; never raises."""
        try:
            return sweep_once(self.settings, api=self.api, redis=redis, interval=self.interval, periodic=True)
        except Exception as exc:  # the thread must outlive any one failure
            log_event(logger, "sweep_failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            return None
