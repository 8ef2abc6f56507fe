"""RQ job functions: the thin shell between a queued batch and the store.

The job contract (arguments, serializer, retries) is in :mod:`callstate.jobqueue`. A job is
idempotent: running it twice, or after a worker died half-way, leaves the store as running it once.

Pipelining across jobs. Each RQ job costs its worker about 30 dependent Redis round trips of
bookkeeping (dequeue, heartbeats, registries, success), whatever it carries: nothing on loopback,
but with Redis 2 ms away each way that alone limits a worker to ~8 jobs a second (bench/RESULTS.md).
So a running job takes over jobs waiting in the queue, :data:`ABSORB` per round trip (moved to
RQ's intermediate list, as RQ's own dequeue does) until it holds :data:`ABSORB_EVENTS` events,
and applies all their events in one :meth:`~workers.store.Store.apply` (three or four pipelined
round trips). Then it deletes
them, in one more. Safety: until then they are in the intermediate list, so if this worker dies
they are retried like any job stranded there (:mod:`workers.runner`); if the apply raises, they go
back to the head of the queue and this job fails and is retried alone.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Final

from redis import Redis
from rq import Queue, get_current_job
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from callstate.connection import connect_store
from callstate.event import Event
from callstate.jobqueue import APPLY_EVENTS, OrjsonSerializer
from callstate.logs import log_event
from callstate.settings import Settings
from workers.store import Store

logger = logging.getLogger("callstate.worker")

#: Queued jobs a running job takes over per round trip, and at most how many rounds: it stops
#: once it holds :data:`ABSORB_EVENTS` events, or the queue is empty. Under latency the CPU of one
#: apply then outweighs the ~40 round trips the group costs (bench/RESULTS.md).
ABSORB: Final = 32
ABSORB_ROUNDS: Final = 4
ABSORB_EVENTS: Final = 4096

_stores: dict[int, Store] = {}


def bind(store: Store, queue: Redis) -> None:
    """Use ``store`` for jobs taken from the queue Redis ``queue`` (``callstate worker`` calls
    this; the store may live elsewhere, STORE_REDIS_URL)."""
    _stores[id(queue.connection_pool)] = store


def _store() -> Store:
    job = get_current_job()
    if job is None:
        raise RuntimeError("apply_events runs inside an RQ job")
    store = _stores.get(id(job.connection.connection_pool))
    if store is None:
        # A plain `rq worker` that did not go through `callstate worker`.
        settings = Settings.from_environ(os.environ)
        client = connect_store(settings, command_timeout=None, role="worker", queue=job.connection)
        store = Store(client, settings.retention_seconds, settings.max_events_per_call)
        bind(store, job.connection)
    return store


def apply_events(events: list[dict[str, Any]]) -> None:
    """Apply a batch of wire-form events (:meth:`Event.to_wire`), and those of the queued jobs it
    takes over (see the module docstring), to the store."""
    started = time.perf_counter()
    job = get_current_job()
    store = _store()
    absorbed = _absorb(job, len(events)) if job is not None else []
    wire = events + [event for other in absorbed for event in other.args[0]]
    parsed = [Event.from_wire(event) for event in wire]
    try:
        result = store.apply(parsed)
    except BaseException:
        if job is not None:
            _release(job, absorbed, back_to_queue=True)
        raise
    if job is not None:
        _release(job, absorbed, back_to_queue=False)
    received = [e.received_at for e in parsed if e.received_at is not None]
    log_event(
        logger,
        "job",
        job_id=job.id if job is not None else None,
        jobs=1 + len(absorbed),
        events=result.events,
        new_events=result.new_events,
        replaced=result.replaced,
        over_cap=result.over_cap,
        calls=result.calls,
        changed=len(result.changed),
        published=result.published,
        conflicts=result.conflicts,
        orphan_recordings=result.orphan_recordings,
        call_sids=sorted({e.call_sid for e in parsed if e.call_sid})[:20],
        ms=round((time.perf_counter() - started) * 1000, 2),
        lag_ms=round((time.time() - min(received)) * 1000, 1) if received else None,
    )


def _keys(job: Job) -> tuple[str, str]:
    """The job's queue and RQ's intermediate list of that queue."""
    queue = Queue.redis_queue_namespace_prefix + job.origin
    return queue, IntermediateQueue.get_intermediate_queue_key(queue)


def _absorb(job: Job, events: int) -> list[Job]:
    """Move queued jobs to the intermediate list and load them, two round trips per
    :data:`ABSORB` of them, until ``events`` plus theirs reach :data:`ABSORB_EVENTS` or the queue
    is empty. Jobs of another function go straight back to the queue."""
    queue, intermediate = _keys(job)
    redis = job.connection
    taken: list[Job] = []
    for _ in range(ABSORB_ROUNDS):
        pipe = redis.pipeline(transaction=False)
        for _ in range(ABSORB):
            pipe.lmove(queue, intermediate)
        ids = [raw.decode() for raw in pipe.execute() if raw is not None]
        if not ids:
            break
        loaded = Job.fetch_many(ids, connection=redis, serializer=OrjsonSerializer)
        ours = [other for other in loaded if other is not None and other.func_name == APPLY_EVENTS]
        strangers = [
            i for i, other in zip(ids, loaded, strict=True) if other is not None and other not in ours
        ]
        if strangers:
            _release_ids(redis, queue, intermediate, strangers, back_to_queue=True)
        gone = [i for i, other in zip(ids, loaded, strict=True) if other is None]
        if gone:  # deleted meanwhile (expired, or finished by a rescue): nothing to run
            _release_ids(redis, queue, intermediate, gone, back_to_queue=False)
        taken += ours
        events += sum(len(other.args[0]) for other in ours)
        if len(ids) < ABSORB or events >= ABSORB_EVENTS:
            break
    return taken


def _release(job: Job, absorbed: list[Job], *, back_to_queue: bool) -> None:
    if absorbed:
        queue, intermediate = _keys(job)
        _release_ids(
            job.connection, queue, intermediate, [o.id for o in absorbed], back_to_queue=back_to_queue
        )


def _release_ids(redis: Redis, queue: str, intermediate: str, ids: list[str], *, back_to_queue: bool) -> None:
    """Take ``ids`` off the intermediate list: back to the head of the queue, or done (their job
    hashes deleted, as RQ does for a successful job with ``result_ttl=0``). One round trip.

    One MULTI/EXEC: a full Redis refuses LPUSH but not LREM, and without the transaction the jobs
    would leave the intermediate list without reaching the queue (lost; found by the soak). With
    it, a refused command aborts the whole transaction and they stay where a rescue finds them."""
    pipe = redis.pipeline(transaction=True)
    for job_id in ids:
        pipe.lrem(intermediate, 1, job_id)
        if back_to_queue:
            pipe.lpush(queue, job_id)
        else:
            pipe.delete(Job.key_for(job_id))
    pipe.execute()
