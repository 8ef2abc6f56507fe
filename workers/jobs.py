"""RQ job functions: the thin shell between a queued batch and the store.

The job contract (arguments, serializer, retries) is in :mod:`callstate.jobqueue`. A job is
idempotent: running it twice, or after a worker died half-way, leaves the store as running it once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from rq import get_current_job

from callstate.event import Event
from callstate.logs import log_event
from callstate.settings import Settings
from workers.store import Store

logger = logging.getLogger("callstate.worker")

_stores: dict[int, Store] = {}


def bind(store: Store) -> None:
    """Use ``store`` for jobs run on its Redis connection (``callstate worker`` calls this)."""
    _stores[id(store.redis.connection_pool)] = store


def _store() -> Store:
    job = get_current_job()
    if job is None:
        raise RuntimeError("apply_events runs inside an RQ job")
    store = _stores.get(id(job.connection.connection_pool))
    if store is None:
        # A plain `rq worker` that did not go through `callstate worker`.
        settings = Settings.from_environ(os.environ)
        store = Store(job.connection, settings.retention_seconds, settings.max_events_per_call)
        bind(store)
    return store


def apply_events(events: list[dict[str, Any]]) -> None:
    """Apply a batch of wire-form events (:meth:`Event.to_wire`) to the store."""
    started = time.perf_counter()
    job = get_current_job()
    parsed = [Event.from_wire(event) for event in events]
    result = _store().apply(parsed)
    received = [e.received_at for e in parsed if e.received_at is not None]
    log_event(
        logger,
        "job",
        job_id=job.id if job is not None else None,
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
