"""The store on a Redis Cluster loses a master while callbacks flow: its replica takes over and
every callback that was acknowledged ends up reconciled (README, "Failure modes")."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from callstate.traffic import make_history
from tests import storedcall
from tests.procs import environment, start_web, start_worker, wait_until
from tests.rediscluster import RedisClusterServer
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import TOKEN, form_request
from workers.reduce import reduce

CALLS = 120


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """3 masters, each with a replica: 6 redis-servers, for this test only."""
    cluster = RedisClusterServer(tmp_path / "cluster", replicas=1)
    cluster.start()
    yield cluster
    cluster.stop()


def test_a_master_killed_mid_traffic_loses_no_acknowledged_callback(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    replicated_cluster: RedisClusterServer,
    tmp_path: Path,
) -> None:
    """Callbacks of 120 calls flow through `web` into two workers whose store is the cluster; a
    master (not the one STORE_REDIS_URL names) is SIGKILLed a third of the way through. Every call
    whose callbacks were all answered 204 ends with all its events stored and the state they
    reduce to, and the killed master's replica is a master."""
    cluster = replicated_cluster
    port = free_port()
    env = environment(
        PORT=str(port), REDIS_URL=redis_server.url, STORE_REDIS_URL=cluster.url, TWILIO_AUTH_TOKEN=TOKEN
    )
    rng = random.Random(13)
    # What Twilio sends (the REST sweep's observations do not come over HTTP).
    histories = {
        sid: [event for event in make_history(rng, sid) if event.source == "twilio"]
        for sid in (f"CA{n:032x}" for n in range(1, CALLS + 1))
    }
    deliveries = [(sid, event) for sid, events in histories.items() for event in events]
    rng.shuffle(deliveries)
    victim = next(node for node in cluster.master_nodes() if node is not cluster.nodes[0])
    killed = threading.Event()
    answers: dict[str, list[int]] = {sid: [] for sid in histories}

    web = start_web(env, tmp_path, port)
    workers = [start_worker(env, tmp_path, name=f"worker-{n}") for n in (1, 2)]
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            for n, (sid, event) in enumerate(deliveries):
                if n == len(deliveries) // 3:
                    victim.kill()
                    killed.set()
                path = "/twilio/call-status" if event.kind == "call" else "/twilio/recording-status"
                body, headers = form_request(base + path, list(event.params))
                answers[sid].append(client.post(path, content=body, headers=headers).status_code)
        assert killed.is_set()
        acknowledged = [sid for sid, codes in answers.items() if codes and set(codes) == {204}]
        # The queue is not on the cluster: the web process acknowledged every callback.
        assert len(acknowledged) == sum(1 for events in histories.values() if events)

        cluster.wait_healthy(deadline=time.monotonic() + 30)
        store = cluster.client()

        def reconciled(sid: str) -> bool:
            expected = reduce(sid, histories[sid]).to_json()
            return storedcall.state_json(store, sid) == expected

        wait_until(lambda: all(reconciled(sid) for sid in acknowledged), 120, "every call to be reconciled")
        for sid in acknowledged:
            assert len(storedcall.events(store, sid)) == len({event.slot() for event in histories[sid]})
        assert victim.process is None
        masters = [node for node in cluster.live_nodes() if node.role() == "master"]
        assert len(masters) == 3
        # The writes waited for replicas (WAIT 1) on the masters that kept theirs.
        assert any(node.client().info("commandstats").get("cmdstat_wait") for node in masters)
    finally:
        for worker in workers:
            worker.stop()
        web.stop()
