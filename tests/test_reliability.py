"""Faults with real processes: workers killed mid-job, Redis killed and restarted, Redis absent at
start, failed jobs, replay. Each test counts that every acknowledged event reached the store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
import orjson
import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from callstate import compression, keys
from callstate.connection import StoreClient
from callstate.event import Event
from callstate.jobqueue import JOB_TIMEOUT, RETRY_INTERVALS, OrjsonSerializer, enqueue_events, make_queue
from callstate.traffic import make_history
from tests import storedcall
from tests.procs import Process, environment, procfile, start_web, start_worker, wait_until
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import TOKEN, call_params, call_sid, form_request
from workers.reduce import reduce
from workers.runner import ABANDON_GRACE, MAINTENANCE_INTERVAL
from workers.store import Store

RETENTION = 86_400


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, AOF fsync'd on every write as deploy/redis.conf has it,
    which the test may kill and restart."""
    server = RedisServer(tmp_path / "redis", appendfsync="always")
    server.start()
    yield server
    server.stop()


def histories(count: int, seed: int) -> dict[str, list[Event]]:
    rng = random.Random(seed)
    return {
        call_sid(seed * 100_000 + n): make_history(rng, call_sid(seed * 100_000 + n)) for n in range(count)
    }


def fully_applied(client: StoreClient, calls: dict[str, list[Event]]) -> bool:
    """Every call's stored state is the reduction of all of its events."""
    states = storedcall.states_json(client, list(calls))
    return all(
        state == reduce(sid, events).to_json()
        for (sid, events), state in zip(calls.items(), states, strict=True)
    )


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def worker_env(server: RedisServer, **extra: str) -> dict[str, str]:
    return environment(REDIS_URL=server.url, **extra)


class TestWorkerDeath:
    @pytest.mark.timeout(300)
    def test_sigkill_mid_job_loses_nothing_and_another_worker_recovers_it(
        self, private_redis: RedisServer, tmp_path: Path
    ) -> None:
        """A worker killed with SIGKILL during a job: another worker applies its events by itself,
        and the idempotent reconcile makes the second run harmless. (How soon is arithmetic on
        the settings: test_a_dead_workers_job_is_retried_within_a_minute.)"""
        client = private_redis.client()
        calls = histories(2000, seed=1)
        events = [event.to_wire() for history in calls.values() for event in history]
        # The production job timeout would make the test wait ~30 s for the abandoned-job check;
        # 10 s still leaves the rescue several times the second or so its work takes.
        enqueue_events(make_queue(client, "callstate"), events, timeout=10)

        victim = start_worker(worker_env(private_redis), tmp_path, name="victim")
        registry = StartedJobRegistry("callstate", connection=client, serializer=OrjsonSerializer)
        wait_until(lambda: registry.count > 0, what="the job to start")
        victim.stop(signal.SIGKILL)
        assert not fully_applied(client, calls), "the job finished before the kill: make it bigger"

        rescuer = start_worker(worker_env(private_redis), tmp_path, name="rescuer")
        try:
            # Polls the rescuer's log (cheap), not the store (reducing 2,000 calls each time).
            # Generous: a loaded machine slows the rescue, which is no fault of the recovery.
            wait_until(lambda: '"event":"job"' in rescuer.output(), timeout=200, what="the rescue")
        finally:
            rescuer.stop()
        assert fully_applied(client, calls)
        assert FailedJobRegistry("callstate", connection=client).count == 0
        # One stream entry per call version: the re-run added no entry for what was already done.
        versions = sum(int(cast(bytes, client.hget(keys.call(sid), "version"))) for sid in calls)
        assert client.xlen(keys.changes(0)) == versions

    def test_a_dead_workers_job_is_retried_within_a_minute(self) -> None:
        """With the default job timeout, a job whose worker died is declared abandoned (heartbeat
        TTL), noticed by the next maintenance run and retried at once: well within a minute."""
        heartbeat_ttl = JOB_TIMEOUT + ABANDON_GRACE
        assert heartbeat_ttl + MAINTENANCE_INTERVAL + RETRY_INTERVALS[0] <= 40

    @pytest.mark.timeout(300)
    def test_sigterm_lets_the_current_job_finish(self, private_redis: RedisServer, tmp_path: Path) -> None:
        """SIGTERM is a warm shutdown: the job in hand completes, the worker exits 0."""
        client = private_redis.client()
        # About a second of work: long enough to be mid-job at the signal, short enough to finish
        # within the job timeout (20 s) even on a machine ten times slower than usual.
        calls = histories(1500, seed=2)
        events = [event.to_wire() for history in calls.values() for event in history]
        enqueue_events(make_queue(client, "callstate"), events)
        worker = start_worker(worker_env(private_redis), tmp_path)
        registry = StartedJobRegistry("callstate", connection=client, serializer=OrjsonSerializer)
        wait_until(lambda: registry.count > 0, what="the job to start")
        assert worker.stop(signal.SIGTERM, timeout=200) == 0
        assert fully_applied(client, calls)
        assert registry.count == 0


class TestRedisOutage:
    def test_redis_killed_and_restarted_loses_no_acknowledged_event(
        self, private_redis: RedisServer, tmp_path: Path
    ) -> None:
        """Redis SIGKILLed mid-traffic and restarted from its AOF: callbacks get 503 with
        Retry-After meanwhile (never 2xx, never a hang), web and worker recover by themselves, and
        every callback that got a 204 is in the store."""
        port = free_port()
        env = worker_env(private_redis, PORT=str(port), TWILIO_AUTH_TOKEN=TOKEN)
        web = start_web(env, tmp_path, port)
        worker = start_worker(env, tmp_path)
        base = f"http://127.0.0.1:{port}"
        acknowledged: list[str] = []
        refused = 0

        def send(n: int, client: httpx.Client) -> int:
            body, headers = form_request(
                base + "/twilio/call-status", call_params(call_sid(n), "completed", 0)
            )
            # A hang is the client's timeout (10 s, five times the web's Redis timeout) expiring.
            response = client.post("/twilio/call-status", content=body, headers=headers)
            if response.status_code == 204:
                acknowledged.append(call_sid(n))
            else:
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) > 0
            return response.status_code

        try:
            with httpx.Client(base_url=base, timeout=10) as client:
                for n in range(200):
                    assert send(n, client) == 204
                private_redis.stop(kill=True)
                for n in range(200, 220):
                    refused += send(n, client) == 503
                assert client.get("/readyz").status_code == 503
                private_redis.start()
                wait_until(lambda: client.get("/readyz").status_code == 200, what="web readiness")
                for n in range(220, 400):
                    send(n, client)
            store = private_redis.client()

            def all_stored() -> bool:
                pipe = store.pipeline(transaction=False)
                for sid in acknowledged:
                    pipe.exists(keys.call(sid))
                return all(pipe.execute())

            wait_until(all_stored, timeout=60, what="every acknowledged callback in the store")
            # Recovered by itself: the same processes, never restarted.
            assert web.alive()
            assert worker.alive()
        finally:
            web.stop()
            worker.stop()
        assert refused == 20
        assert len(acknowledged) >= 380

    def test_redis_paused_every_callback_is_answered_within_five_seconds(
        self, private_redis: RedisServer, tmp_path: Path
    ) -> None:
        """Redis stopped (SIGSTOP) under concurrent callbacks, so that some wait for a write slot
        behind writes that hang: each is answered 503 with Retry-After within 5 s in total, and
        callbacks are acknowledged again once Redis resumes."""
        port = free_port()
        web = start_web(worker_env(private_redis, PORT=str(port), TWILIO_AUTH_TOKEN=TOKEN), tmp_path, port)
        base = f"http://127.0.0.1:{port}"
        assert private_redis.process is not None
        redis_pid = private_redis.process.pid

        def send(n: int) -> int:
            """One callback; the client gives up after 5 s, which fails the test (ReadTimeout)."""
            body, headers = form_request(base + "/twilio/call-status", call_params(call_sid(n), "ringing", 1))
            with httpx.Client(base_url=base, timeout=5) as client:
                response = client.post("/twilio/call-status", content=body, headers=headers)
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) > 0
            return response.status_code

        try:
            assert send(0) == 204
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(max_workers=12) as pool:
                    answers = list(pool.map(send, range(1, 25)))
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            wait_until(lambda: send(100) == 204, what="callbacks acknowledged again")
        finally:
            web.stop()
        assert set(answers) == {503}

    @pytest.mark.parametrize("outage", ["killed", "paused"])
    def test_sigterm_during_an_outage_ends_the_worker_within_ten_seconds(
        self, private_redis: RedisServer, tmp_path: Path, outage: str
    ) -> None:
        """Redis gone (reconnection loop) or paused (a command that never returns): SIGTERM still
        ends the worker and its children (RQ's scheduler) within 10 s, instead of a worker that
        retries until its supervisor gives up, or a scheduler left behind."""
        worker = start_worker(worker_env(private_redis), tmp_path)
        assert private_redis.process is not None
        redis_pid = private_redis.process.pid
        try:
            if outage == "killed":
                private_redis.stop(kill=True)
                wait_until(
                    lambda: "could not connect" in worker.output() or "redis_unavailable" in worker.output(),
                    what="the worker to notice",
                )
            else:
                os.kill(redis_pid, signal.SIGSTOP)
            worker.popen.send_signal(signal.SIGTERM)
            try:
                worker.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 10 s after SIGTERM:\n{worker.output()[-2000:]}")
            # Nothing of its process group is left (the scheduler is a child process).
            wait_until(lambda: not _group_alive(worker.popen.pid), timeout=5, what="its children to exit")
        finally:
            if outage == "paused":
                os.kill(redis_pid, signal.SIGCONT)
            worker.stop()

    def test_redis_down_at_start(self, tmp_path: Path) -> None:
        """Web and worker start without Redis, say so (503, readyz), and work once it is up."""
        server = RedisServer(tmp_path / "late-redis", appendfsync="always")
        port = free_port()
        env = worker_env(server, PORT=str(port), TWILIO_AUTH_TOKEN=TOKEN)
        web = start_web(env, tmp_path, port)
        worker = Process("worker", procfile()["worker"], env, tmp_path)
        base = f"http://127.0.0.1:{port}"
        body, headers = form_request(base + "/twilio/call-status", call_params(call_sid(7), "ringing", 1))
        try:
            wait_until(lambda: "redis_unavailable" in worker.output(), what="the worker to notice")
            with httpx.Client(base_url=base, timeout=10) as client:
                assert client.get("/readyz").status_code == 503
                assert client.post("/twilio/call-status", content=body, headers=headers).status_code == 503
                server.start()
                wait_until(lambda: client.get("/readyz").status_code == 200, what="web readiness")
                assert client.post("/twilio/call-status", content=body, headers=headers).status_code == 204
            store = server.client()
            wait_until(lambda: store.exists(keys.call(call_sid(7))), timeout=30, what="the worker")
        finally:
            web.stop()
            worker_code = worker.stop()
            server.stop()
        assert worker_code == 0


class TestFailedJobs:
    def test_jobs_carry_a_retry_with_backoff(self, redis_client: redis.Redis) -> None:
        """Transient errors are retried by RQ's scheduler, with growing intervals."""
        job = enqueue_events(make_queue(redis_client, "callstate"), [])
        assert job.retries_left == 5
        assert job.retry_intervals == [0, 5, 30, 120, 600]
        assert job.failure_ttl is not None
        assert job.failure_ttl >= 7 * 86_400

    def test_requeue_failed_puts_failed_jobs_back(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """`callstate requeue-failed` moves every failed job back onto the queue."""
        queue = make_queue(redis_client, "callstate")
        job = enqueue_events(queue, [{"kind": "bogus", "params": []}])
        queue.remove(job.id)
        registry = FailedJobRegistry(queue=queue)
        registry.add(job, exc_string="ValueError: unknown event kind")
        assert registry.count == 1
        output = subprocess.run(
            [*procfile()["worker"][:-1], "requeue-failed"],
            env=environment(REDIS_URL=redis_server.url),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "requeued 1" in output
        assert registry.count == 0
        assert Queue("callstate", connection=redis_client, serializer=OrjsonSerializer).job_ids == [job.id]


class TestReplay:
    @pytest.mark.parametrize("where", ["redis", "cluster"])
    def test_replay_rebuilds_a_call_from_its_events(
        self, redis_server: RedisServer, redis_client: redis.Redis, request: pytest.FixtureRequest, where: str
    ) -> None:
        """`callstate replay SID` and `--all` recompute states from stored events, the store on the
        queue's Redis or on a 3-master cluster (STORE_REDIS_URL)."""
        env = environment(REDIS_URL=redis_server.url)
        store_client: StoreClient = redis_client
        if where == "cluster":
            store_client = request.getfixturevalue("cluster_client")
            env["STORE_REDIS_URL"] = request.getfixturevalue("redis_cluster").url
        calls = histories(5, seed=3)
        Store(store_client, RETENTION).apply([e for history in calls.values() for e in history])
        first, second = list(calls)[:2]
        for sid in (first, second):
            stale: dict[str, Any] = storedcall.state(store_client, sid)
            stale["status"] = "queued"
            store_client.hset(keys.call(sid), "state", compression.store_state(orjson.dumps(stale)))
        command = [*procfile()["worker"][:-1], "replay"]
        one = subprocess.run([*command, first], env=env, capture_output=True, text=True, check=True)
        assert "replayed 1 call(s), 1 changed" in one.stdout
        every = subprocess.run([*command, "--all"], env=env, capture_output=True, text=True, check=True)
        assert "replayed 5 call(s), 1 changed" in every.stdout
        assert fully_applied(store_client, calls)
