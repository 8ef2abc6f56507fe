"""Several real worker processes on one queue of shuffled, duplicated events."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import cast

import orjson
import redis

from callstate import keys
from callstate.event import Event
from callstate.jobqueue import enqueue_events, make_queue
from callstate.traffic import make_history
from tests import storedcall
from tests.histories import redelivered
from tests.procs import Process, environment, procfile, wait_until
from tests.redisserver import RedisServer
from workers.reduce import reduce


def test_concurrent_workers_reach_exactly_the_expected_states(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Three worker processes draining shuffled, duplicated events of many calls end with every
    call in its expected state, and the change stream has one entry per change, none for a
    duplicate."""
    rng = random.Random(42)
    calls = {f"CA{n:032x}": make_history(rng, f"CA{n:032x}") for n in range(300)}
    deliveries: list[Event] = [event for history in calls.values() for event in history]
    deliveries += [redelivered(rng.choice(deliveries), n) for n in range(len(deliveries) // 3)]
    rng.shuffle(deliveries)
    queue = make_queue(redis_client, "callstate")
    env = environment(REDIS_URL=redis_server.url)
    workers = [Process(f"worker{n}", procfile()["worker"], env, tmp_path) for n in range(3)]
    try:
        # Every worker waits in its blocking dequeue before the first job is pushed: Redis hands
        # the first pushes to the blocked clients in turn, so each worker gets work however slowly
        # a loaded machine started it.
        wait_until(
            lambda: int(redis_client.info("clients")["blocked_clients"]) >= len(workers),
            what="three workers waiting for jobs",
        )
        # Small jobs, so that the workers really interleave on the same calls.
        for start in range(0, len(deliveries), 5):
            enqueue_events(queue, [event.to_wire() for event in deliveries[start : start + 5]])
        wait_until(lambda: queue.count == 0, timeout=120, what="the queue to drain")
        expected = {sid: reduce(sid, history).to_json() for sid, history in calls.items()}

        def settled() -> bool:
            return (
                dict(zip(calls, storedcall.states_json(redis_client, list(calls)), strict=True)) == expected
            )

        wait_until(settled, timeout=60, what="every call to reach its expected state")
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0, 0]
    # A job may take over queued jobs (workers.jobs): its log line counts them all.
    job_lines = [
        orjson.loads(line)
        for worker in workers
        for line in worker.output().splitlines()
        if '"event":"job"' in line
    ]
    assert sum(line["jobs"] for line in job_lines) >= len(deliveries) // 5

    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(keys.changes(0)))
    per_call = Counter(fields[b"call"].decode() for _, fields in entries)
    for sid, history in calls.items():
        version = int(cast(bytes, redis_client.hget(keys.call(sid), "version")))
        assert per_call[sid] == version
        # A state changes only when a new distinct event arrives: duplicates add no version.
        assert version <= len(set(history))
