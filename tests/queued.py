"""What the web process queued: the events inside the RQ jobs waiting in the events queue."""

from __future__ import annotations

from typing import Any

import redis
from rq.job import Job

from callstate.jobqueue import OrjsonSerializer, make_queue


def queued_events(client: redis.Redis, queue_name: str = "callstate") -> list[dict[str, Any]]:
    """Every event in every queued job, in queue order (wire form, as the workers get it)."""
    queue = make_queue(client, queue_name)
    events: list[dict[str, Any]] = []
    for job_id in queue.job_ids:
        job = Job.fetch(job_id, connection=client, serializer=OrjsonSerializer)
        events += job.args[0]
    return events
