"""The worker process: RQ workers on the events queue, with the store bound to their connection.

Process model. RQ's ``SimpleWorker`` runs jobs in the worker process itself. The forking ``Worker``
isolates each job in a child process, which costs a fork per job (bench/RESULTS.md, "Workers": it
runs a fraction of the no-op jobs the simple worker runs) and buys nothing here: a job is pure
reduction plus Redis calls.

Failure policy.

* A worker killed mid-job (SIGKILL, OOM, a lost dyno) leaves its job in RQ's started registry.
  RQ declares it abandoned once the job's heartbeat TTL passes and then retries it (our jobs carry
  a ``Retry``). RQ's defaults make that ~3 minutes plus up to 10 minutes of maintenance interval;
  :class:`EventWorker` shortens the TTL to the job timeout plus :data:`ABANDON_GRACE` and runs the
  maintenance every :data:`MAINTENANCE_INTERVAL` seconds, so a dead worker's events are applied
  within ``job_timeout + ~15 s`` (well under a minute with the default 20 s timeout). A job caught
  between dequeue and start (RQ's "intermediate" list) is retried within ~35 s, where RQ would
  wait over a minute. Running a job twice is harmless: jobs are idempotent.
* SIGTERM (Heroku's shutdown, 30 s before SIGKILL) is RQ's warm shutdown: the current job, which
  takes milliseconds, finishes; then the process exits 0. Outside a job (waiting for one, in RQ's
  reconnection loop, in our backoff, blocked on a Redis that was paused) it exits within
  :data:`STOP_DEADLINE` seconds whatever Redis does: past that it stops its children (RQ's
  scheduler) and exits 0 anyway; in a job, within the job's timeout plus that. Nothing is in hand
  that Redis does not also hold: an unfinished job is retried as abandoned, and jobs are idempotent.
* Redis unreachable, at start or later: the worker waits and reconnects with capped exponential
  backoff, forever, without a restart. Nothing is lost meanwhile: the queue is in Redis.
"""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Final

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.worker import WorkerStatus

from callstate.connection import connect, connect_store, describe_error
from callstate.jobqueue import OrjsonSerializer, make_queue
from callstate.logs import log_event
from callstate.settings import Settings
from workers import jobs
from workers.store import Store
from workers.sweep import Sweeper

logger = logging.getLogger("callstate.worker")

#: Seconds after a job's timeout at which a job whose worker stopped heart-beating is abandoned.
ABANDON_GRACE: Final = 5
#: Seconds between RQ maintenance runs (abandoned jobs are found there); RQ's default is 600.
MAINTENANCE_INTERVAL: Final = 10
#: Seconds a job may sit between dequeue and start before it counts as stranded by a dead worker
#: (it normally spends microseconds there).
STRANDED_AFTER: Final = 15
#: RQ's worker TTL. An idle worker blocks on the queue for ``WORKER_TTL - 15`` seconds between
#: maintenance checks (RQ's default, 420, means 405 s): 25 makes that 10 s.
WORKER_TTL: Final = 25
#: Seconds from SIGTERM to exit at the latest, whatever Redis does (systemd and Heroku wait 30 s;
#: README, "Failure modes").
STOP_DEADLINE: Final = 8.0
#: Reconnection backoff bounds, in seconds.
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 15.0
#: Seconds a store command may take when the store has a Redis of its own (STORE_REDIS_URL).
STORE_TIMEOUT: Final = 10.0


class StopRequest:
    """The process's stop request, whichever handler gets the signal (RQ's inside its loop, ours
    outside it). Once requested, the process exits within :data:`STOP_DEADLINE` seconds."""

    def __init__(self, deadline: float = STOP_DEADLINE, job_timeout: float = 0.0) -> None:
        self.event = threading.Event()
        self.deadline = deadline
        self.job_timeout = job_timeout

    def is_set(self) -> bool:
        return self.event.is_set()

    def request(
        self, signum: int = signal.SIGTERM, frame: FrameType | None = None, *, busy: bool = False
    ) -> None:
        """Request the stop; ``busy``: a job is running, which RQ stops at its timeout."""
        if self.event.is_set():
            return
        self.event.set()
        deadline = self.deadline + (self.job_timeout if busy else 0.0)
        # A thread, because the main thread may be blocked in a read from a paused Redis.
        timer = threading.Timer(deadline, _exit_now, kwargs={"after": deadline})
        timer.daemon = True
        timer.start()

    def install(self) -> None:
        """Make SIGTERM and SIGINT request the stop (RQ replaces these handlers while it works)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request)


def _exit_now(after: float) -> None:
    log_event(logger, "worker_stop_forced", logging.WARNING, after_s=after)
    # RQ's scheduler runs in a child process: it must not outlive us.
    for child in multiprocessing.active_children():
        child.kill()
    logging.shutdown()
    os._exit(0)


class EventWorker(SimpleWorker):
    """``SimpleWorker`` whose started jobs are declared abandoned soon after their worker died,
    and whose SIGTERM also requests the process's stop (:class:`StopRequest`)."""

    stop_request: StopRequest | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_request is not None:
            self.stop_request.request(busy=self.get_state() == WorkerStatus.BUSY)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def clean_registries(self) -> None:
        super().clean_registries()  # type: ignore[no-untyped-call]
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    self._rescue_stranded(queue)
                finally:
                    queue.release_maintenance_lock()  # type: ignore[no-untyped-call]

    def _rescue_stranded(self, queue: Queue) -> None:
        """Retry jobs stranded between dequeue and start by a worker (or Redis) that died there.

        RQ moves a job to an "intermediate" list before registering it as started; a job left
        there is retried by RQ only a minute after its maintenance first notices it. We retry it
        :data:`STRANDED_AFTER` seconds after that first notice instead.
        """
        intermediate = queue.intermediate_queue
        for job_id in intermediate.get_job_ids():
            first_seen = intermediate.get_first_seen(job_id)
            if job_id in queue.started_job_registry or first_seen is None:
                continue
            if (datetime.now(UTC) - first_seen).total_seconds() < STRANDED_AFTER:
                continue
            job = queue.fetch_job(job_id)
            if job is not None:
                self.handle_job_failure(job, queue, exc_string="stranded before start by a dead worker")
            intermediate.remove(job_id)
            log_event(logger, "job_rescued", logging.WARNING, job_id=job_id)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker cannot heartbeat during a job (it runs it), so the TTL must cover the
        # whole job: its timeout, plus a little. RQ adds 60 s; we add ABANDON_GRACE.
        timeout = job.timeout if job.timeout and job.timeout > 0 else 60
        return int(timeout) + ABANDON_GRACE


def build_worker(settings: Settings, name: str) -> EventWorker:
    """A worker bound to the events queue, its store registered for the jobs it will run.

    Talks to Redis (schema version), so it raises ``RedisError`` when Redis is down.
    """
    redis = connect(settings, command_timeout=None, role="worker")
    # The store's commands never block, so a store of its own gets a timeout: a master that
    # vanished without a reset (a lost machine) fails the job, which RQ retries.
    client = connect_store(settings, command_timeout=STORE_TIMEOUT, role="worker-store", queue=redis)
    store = Store(client, settings.retention_seconds, settings.max_events_per_call)
    store.write_schema_version()
    jobs.bind(store, redis)
    queue = make_queue(redis, settings.queue_name)
    # What exists now lives as long as the process: spare the collector from walking it per job.
    gc.freeze()
    return EventWorker(
        [queue],
        connection=redis,
        serializer=OrjsonSerializer,
        name=name,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
    )


def run(settings: Settings, *, burst: bool = False, name: str | None = None) -> None:
    """Work until SIGTERM/SIGINT (or, with ``burst``, until the queue is empty).

    If RQ's loop gives up on a Redis error, start over after a backoff instead of exiting.
    """
    # The stuck-call sweep runs beside the RQ loop, in every long-running worker (it takes a
    # lease in Redis, so the workers together sweep about once per interval).
    sweeper = None if burst else Sweeper(settings, interval=settings.sweep_interval)
    if sweeper is not None:
        sweeper.start()
    try:
        _work(settings, burst=burst, name=name)
    finally:
        if sweeper is not None:
            sweeper.stop()


def _work(settings: Settings, *, burst: bool, name: str | None) -> None:
    stop = StopRequest(job_timeout=settings.job_timeout)
    stop.install()
    delay = BACKOFF_FIRST
    base = name or f"callstate.{socket.gethostname()}.{os.getpid()}"
    for attempt in itertools.count():
        if stop.is_set():
            return
        try:
            # A worker that lost Redis could not unregister; its name stays taken until its
            # registration expires, so a restart takes a new one.
            worker = build_worker(settings, base if attempt == 0 else f"{base}.{attempt}")
            worker.stop_request = stop
            log_event(logger, "worker_start", worker=worker.name, queue=settings.queue_name, burst=burst)
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
            if burst or stop.is_set():
                return
            # RQ left its loop on an error it logged (Redis went away mid-job, most likely).
            log_event(logger, "worker_restart", logging.WARNING, worker=worker.name)
        except RedisError as exc:
            # Also how RQ's loop ends when it was told to stop but cannot unregister.
            if stop.is_set():
                return
            log_event(
                logger,
                "redis_unavailable",
                logging.WARNING,
                error=describe_error(exc),
                retry_in_s=round(delay, 1),
            )
        else:
            delay = BACKOFF_FIRST
        finally:
            # RQ's handlers outlive work() and would raise StopRequested out of our loop.
            stop.install()
        if stop.event.wait(delay):
            return
        delay = min(delay * 2, BACKOFF_MAX)
