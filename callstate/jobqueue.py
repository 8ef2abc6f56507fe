"""The job contract between the web process and the workers.

The web process enqueues, the workers run; both agree here on the queue, the serializer and the job
options, and on nothing else. The job function is named by its dotted path so that the web process
never imports worker code.

One job carries a *batch* of events (group commit): ``apply_events(events)`` where ``events`` is a
list of :meth:`callstate.event.Event.to_wire` dicts. Jobs are idempotent: applying the same events
twice leaves the store as applying them once, so RQ's at-least-once execution is safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.job import Job

from callstate.counters import hincrby_all

#: Dotted path of the job function (see workers.jobs).
APPLY_EVENTS: Final = "workers.jobs.apply_events"

#: A job that raised, or whose worker died, is retried after these many seconds. The first retry
#: is immediate: RQ then re-enqueues the job itself, without waiting for its scheduler, whose lock
#: a dead worker may hold for a minute. Later ones back off (RQ's scheduler runs in every worker).
RETRY_INTERVALS: Final = (0, 5, 30, 120, 600)

#: Failed jobs stay in RQ's failed registry this long at most, for `callstate requeue-failed`.
#: They hold their callbacks, phone numbers included: never longer than the store keeps calls
#: (:func:`failure_ttl`; README.md, "Redis access").
FAILURE_TTL: Final = 14 * 86_400

#: A batch of events takes milliseconds; a job running this long is stuck and RQ stops it.
JOB_TIMEOUT: Final = 20


class OrjsonSerializer:
    """RQ serializer: JSON via orjson. Unlike pickle it cannot run code when a job is loaded."""

    @staticmethod
    def dumps(obj: Any, /) -> bytes:
        return orjson.dumps(obj)

    @staticmethod
    def loads(data: bytes, /) -> Any:
        return orjson.loads(data)


def make_queue(connection: Redis, name: str) -> Queue:
    """The events queue on ``connection``."""
    return Queue(name, connection=connection, serializer=OrjsonSerializer)


def failure_ttl(retention_seconds: int) -> int:
    """Seconds a failed job is kept: :data:`FAILURE_TTL`, or the store's retention if shorter."""
    return min(FAILURE_TTL, retention_seconds)


def enqueue_batch(
    queue: Queue,
    events: Sequence[dict[str, Any]],
    timeout: int = JOB_TIMEOUT,
    counts: Mapping[str, int] | None = None,
    failed_ttl: int = FAILURE_TTL,
) -> int:
    """Enqueue one job applying ``events`` in one round trip; return how many jobs are then
    waiting in the queue (the group commit slows down when the workers are behind). ``counts``
    are added to the deployment's counters (:mod:`callstate.counters`) in the same MULTI/EXEC."""
    with queue.connection.pipeline() as pipe:
        enqueue_events(queue, events, pipe, timeout, failed_ttl)
        if counts:
            hincrby_all(pipe, counts)
        pipe.llen(queue.key)
        return int(pipe.execute()[-1])


def enqueue_events(
    queue: Queue,
    events: Sequence[dict[str, Any]],
    pipeline: Pipeline | None = None,
    timeout: int = JOB_TIMEOUT,
    failed_ttl: int = FAILURE_TTL,
) -> Job:
    """Enqueue one job applying ``events``; returns when Redis has it. If it fails for good, RQ
    keeps it ``failed_ttl`` seconds (the web process passes :func:`failure_ttl` of its retention).

    With ``pipeline`` the commands join it and the caller executes it; without, they go in one
    MULTI/EXEC round trip of their own (RQ alone would use two).
    """
    if pipeline is None:
        with queue.connection.pipeline() as own:
            job = enqueue_events(queue, events, own, timeout, failed_ttl)
            own.execute()
            return job
    return queue.enqueue_call(
        APPLY_EVENTS,
        args=(list(events),),
        # RQ's default description is the repr of the arguments: phone numbers, and slow to build.
        description="apply_events",
        timeout=timeout,
        # An event queue must never drop work: no TTL while queued, no result kept after success.
        ttl=None,
        result_ttl=0,
        failure_ttl=failed_ttl,
        retry=Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS)),
        pipeline=pipeline,
    )
