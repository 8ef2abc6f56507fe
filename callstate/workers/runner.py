"""The worker process: RQ workers on the events queue, with the store bound to their connection.

RQ's ``SimpleWorker`` runs jobs in the worker process itself. The forking ``Worker`` isolates each
job in a child process, which costs a fork per job (~60 jobs/s against ~235 measured on this
machine, issue 4) and buys nothing here: a job is pure reduction plus Redis calls, and a crash
mid-job is recovered like any other worker death (the job is idempotent).
"""

from __future__ import annotations

import logging
import os
import socket

from redis import Redis
from rq import SimpleWorker

from callstate.jobqueue import OrjsonSerializer, make_queue
from callstate.logs import log_event
from callstate.settings import Settings
from callstate.workers import jobs
from callstate.workers.store import Store

logger = logging.getLogger("callstate.worker")


def build_worker(settings: Settings, name: str | None = None) -> SimpleWorker:
    """A worker bound to the events queue, its store registered for the jobs it will run."""
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )
    store = Store(redis, settings.retention_seconds)
    jobs.bind(store)
    store.write_schema_version()
    queue = make_queue(redis, settings.queue_name)
    return SimpleWorker(
        [queue],
        connection=redis,
        serializer=OrjsonSerializer,
        name=name or f"callstate.{socket.gethostname()}.{os.getpid()}",
    )


def run(settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    """Run one worker until SIGTERM/SIGINT (or, with ``burst``, until the queue is empty)."""
    worker = build_worker(settings, name)
    log_event(logger, "worker_start", worker=worker.name, queue=settings.queue_name, burst=burst)
    # RQ logs a line per job state change; callstate logs one line per job instead.
    return worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
