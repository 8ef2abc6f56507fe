"""A job takes over queued jobs and applies them in one go (pipelining across jobs)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import redis
from rq.registry import FailedJobRegistry

from callstate.jobqueue import enqueue_events, make_queue
from callstate.traffic import make_history
from tests import storedcall
from tests.procs import Process, environment, procfile
from tests.redisserver import RedisServer
from workers.jobs import ABSORB, ABSORB_ROUNDS, _release_ids
from workers.reduce import reduce


def test_queued_jobs_are_taken_over_applied_and_removed(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """With a backlog, one job applies the events of up to ABSORB_ROUNDS x ABSORB more queued jobs
    (these are small: the event bound is not reached); every call
    ends in its expected state and nothing is left behind: not in the queue, not in RQ's
    intermediate list, no job hash, nothing failed."""
    rng = random.Random(5)
    calls = {f"CA{n:032x}": make_history(rng, f"CA{n:032x}") for n in range(200)}
    queue = make_queue(redis_client, "callstate")
    jobs = 0
    for history in calls.values():
        enqueue_events(queue, [event.to_wire() for event in history])
        jobs += 1

    worker = Process(
        "worker", [*procfile()["worker"], "--burst"], environment(REDIS_URL=redis_server.url), tmp_path
    )
    worker.popen.wait(timeout=120)
    output = worker.output()
    assert worker.stop() == 0, output
    lines = [orjson.loads(line) for line in output.splitlines() if '"event":"job"' in line]
    assert sum(line["jobs"] for line in lines) == jobs
    assert max(line["jobs"] for line in lines) == 1 + ABSORB * ABSORB_ROUNDS

    expected = {sid: reduce(sid, history).to_json() for sid, history in calls.items()}
    assert dict(zip(calls, storedcall.states_json(redis_client, list(calls)), strict=True)) == expected
    assert queue.count == 0
    assert redis_client.llen(queue.intermediate_queue.key) == 0
    assert list(redis_client.scan_iter("rq:job:*")) == []
    assert FailedJobRegistry("callstate", connection=redis_client).count == 0


def test_jobs_given_back_to_a_full_redis_stay_where_a_rescue_finds_them(redis_client: redis.Redis) -> None:
    """Giving taken-over jobs back to the queue while Redis refuses writes (maxmemory) fails as a
    whole: the jobs stay in the intermediate list (retried from there), never in neither list."""
    queue = make_queue(redis_client, "callstate")
    job = enqueue_events(queue, [])
    redis_client.lmove(queue.key, queue.intermediate_queue.key)
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", str(redis_client.info("memory")["used_memory"] // 2))
    try:
        with pytest.raises(redis.ResponseError):
            _release_ids(redis_client, queue.key, queue.intermediate_queue.key, [job.id], back_to_queue=True)
    finally:
        redis_client.config_set("maxmemory", "0")
    assert redis_client.lrange(queue.intermediate_queue.key, 0, -1) == [job.id.encode()]
    _release_ids(redis_client, queue.key, queue.intermediate_queue.key, [job.id], back_to_queue=True)
    assert queue.job_ids == [job.id]
    assert redis_client.llen(queue.intermediate_queue.key) == 0
