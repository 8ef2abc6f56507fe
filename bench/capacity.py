"""The inputs of the capacity model: what one event costs each part of a deployment, measured.

The queue (``REDIS_URL``) and the store (``STORE_REDIS_URL``) run on separate redis-servers here,
so that each one's CPU, commands and bytes per event can be read apart; the store is either one
Redis or a real 3-master Redis Cluster (``tests/rediscluster.py``), whose masters are measured one
by one. Each run:

1. empties every Redis and resets its counters;
2. pre-fills the queue through ``callstate web`` (no worker running) with the realistic history
   corpus, as fast as 64 connections allow: the web process's CPU per callback;
3. drains it with ``workers`` ``callstate worker`` processes: events/s from the first job's start
   to the last job's end (read from their job log lines), their CPU per event;
4. reads, per Redis: CPU (``/proc``), commands (``INFO commandstats``, commands run by scripts
   included) and bytes received (``INFO stats`` ``total_net_input_bytes``) per event;
5. checks every call of the corpus (state present, event set complete) and measures memory per
   final call with a recording (``MEMORY USAGE`` over its keys, plus its share of the global keys).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster

from bench import designs
from bench.corpus import Corpus, history_corpus
from bench.drain import job_lines, prefill_queue, start_workers
from bench.procs import cpu_seconds, wait_until
from bench.receiver import Cores
from bench.redisstack import BenchRedis
from callstate import eventset, keys
from tests.rediscluster import RedisClusterServer


class Node(Protocol):
    """One redis-server the bench measures."""

    name: str

    def client(self) -> redis.Redis: ...

    def pid(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Side:
    """What one redis-server spent per event over a run."""

    name: str
    cpu_us: float
    commands: float
    bytes_in: float


@dataclass(frozen=True, slots=True)
class CapacityRun:
    """One pre-fill and drain; per-event figures are over every callback sent (duplicates too)."""

    label: str
    workers: int
    events: int
    calls: int
    seconds: float
    events_per_s: float
    web_cpu_us: float
    worker_cpu_us: float
    queue: Side
    store: tuple[Side, ...]
    complete_calls: int
    bytes_per_final_call: float

    @property
    def worker_events_per_cpu_s(self) -> float:
        """Events one worker process reconciles per second of its CPU: a core's worth."""
        return 1e6 / self.worker_cpu_us


@dataclass(frozen=True, slots=True)
class _Counters:
    cpu: float
    commands: int
    bytes_in: int


def _counters(node: Node) -> _Counters:
    client = node.client()
    stats = client.info("commandstats")
    own = {"cmdstat_info", "cmdstat_config|resetstat", "cmdstat_ping", "cmdstat_cluster|slots"}
    commands = sum(int(value["calls"]) for name, value in stats.items() if name not in own)
    bytes_in = int(client.info("stats")["total_net_input_bytes"])
    client.close()
    return _Counters(cpu_seconds(node.pid()), commands, bytes_in)


def _side(node: Node, before: _Counters, events: int) -> Side:
    after = _counters(node)
    return Side(
        node.name,
        (after.cpu - before.cpu) / events * 1e6,
        (after.commands - before.commands) / events,
        (after.bytes_in - before.bytes_in) / events,
    )


def capacity_run(
    label: str,
    queue: Node,
    store_nodes: Sequence[Node],
    store_url: str,
    corpus: Corpus,
    *,
    env: Mapping[str, str],
    log_dir: Path,
    cores: Cores,
    workers: int,
    timeout: float = 300,
) -> CapacityRun:
    """Pre-fill, drain with ``workers`` workers, and measure each Redis (see the module doc)."""
    for node in (queue, *store_nodes):
        client = node.client()
        client.flushall()
        client.config_resetstat()
        client.close()
    child_env = {**env, "STORE_REDIS_URL": store_url}
    before = {node.name: _counters(node) for node in (queue, *store_nodes)}
    web, port = designs.start(designs.CALLSTATE, child_env, log_dir, cores.server)
    try:
        web_cpu, _ = prefill_queue(web, port, corpus, cores)
    finally:
        web.stop()
    running = start_workers(workers, child_env, log_dir, name=f"capacity-{workers}")
    try:
        cpu = sum(worker.cpu() for worker in running)
        logs = [worker.log_path for worker in running]

        def drained() -> bool:
            return sum(line.events for line in job_lines(*logs)) >= corpus.requests

        wait_until(drained, timeout, "the workers to drain the queue", poll=0.1)
        cpu = sum(worker.cpu() for worker in running) - cpu
    finally:
        for worker in running:
            worker.stop()
    lines = job_lines(*logs)
    seconds = max(line.ended for line in lines) - min(line.started for line in lines)
    events = corpus.requests
    store = _store_client(store_url)
    complete = _complete_calls(store, corpus)
    memory = _bytes_per_final_call(store, store_nodes, corpus)
    store.close()
    return CapacityRun(
        label=label,
        workers=workers,
        events=events,
        calls=len(corpus.expected_events),
        seconds=seconds,
        events_per_s=events / seconds,
        web_cpu_us=web_cpu / events * 1e6,
        worker_cpu_us=cpu / events * 1e6,
        queue=_side(queue, before[queue.name], events),
        store=tuple(_side(node, before[node.name], events) for node in store_nodes),
        complete_calls=complete,
        bytes_per_final_call=memory,
    )


def _store_client(url: str) -> redis.Redis | RedisCluster:
    probe = redis.Redis.from_url(url)
    clustered = bool(probe.info("cluster").get("cluster_enabled"))
    probe.close()
    return RedisCluster.from_url(url) if clustered else redis.Redis.from_url(url)


def _complete_calls(store: redis.Redis | RedisCluster, corpus: Corpus) -> int:
    """Calls whose state exists and whose event set holds every distinct event sent."""
    complete = 0
    for sid, expected in corpus.expected_events.items():
        events, state = store.hmget(keys.call(sid), "events", "state")
        if state is not None and len(eventset.load(events)) == expected:
            complete += 1
    return complete


def _bytes_per_final_call(
    store: redis.Redis | RedisCluster, nodes: Sequence[Node], corpus: Corpus, sample: int = 600
) -> float:
    """``MEMORY USAGE`` of every key of a final call's record (600 sampled calls with a recording), plus
    every non-call key of the store (indexes, streams) divided by the number of calls."""
    sids = random.Random(0).sample(corpus.final_with_recording, min(sample, len(corpus.final_with_recording)))
    own = sum(_usage(store, key) for sid in sids for key in keys.of_record(sid))
    shared = 0
    for node in nodes:
        client = node.client()
        for key in client.scan_iter(match=f"{keys.PREFIX}:{{{keys.PREFIX}*", count=1000):
            shared += int(client.memory_usage(key, samples=0) or 0)
        client.close()
    return own / max(len(sids), 1) + shared / len(corpus.expected_events)


def _usage(store: redis.Redis | RedisCluster, key: str) -> int:
    usage: Any = store.memory_usage(key, samples=0)
    return int(usage or 0)


class ServerNode:
    """A :class:`bench.redisstack.BenchRedis` as a measured node."""

    def __init__(self, name: str, server: Any) -> None:
        self.name = name
        self.server = server

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=30)

    def pid(self) -> int:
        return int(self.server.child.pid)


class ClusterMaster:
    """One master of a :class:`tests.rediscluster.RedisClusterServer`."""

    def __init__(self, name: str, cluster: RedisClusterServer, index: int) -> None:
        self.name = name
        self.node = cluster.nodes[index]

    def client(self) -> redis.Redis:
        return self.node.client()

    def pid(self) -> int:
        assert self.node.process is not None
        return self.node.process.pid


def run_all(
    out: Path, *, events: int, env: Mapping[str, str], cores: Cores, log_dir: Path
) -> list[CapacityRun]:
    """The capacity runs: 1 and 2 workers with the store on its own Redis, then 2 workers with the
    store on a 3-master cluster. The queue is one more Redis, as in production."""
    corpus = history_corpus(out / "capacity.tsv", events, seed=5)
    queue_server = BenchRedis(out / "capacity-queue", dict(env), core=cores.load)
    store_server = BenchRedis(out / "capacity-store", dict(env), core=cores.load)
    queue = ServerNode("queue", queue_server)
    child_env = designs.environment(queue_server.url)
    runs: list[CapacityRun] = []
    try:
        for workers in (1, 2):
            runs.append(
                capacity_run(
                    f"{workers} worker{'s' if workers > 1 else ''}, store on one Redis",
                    queue,
                    [ServerNode("store", store_server)],
                    store_server.url,
                    corpus,
                    env=child_env,
                    log_dir=log_dir,
                    cores=cores,
                    workers=workers,
                )
            )
        # A fresh directory: nodes that remember an earlier cluster refuse to form a new one.
        shutil.rmtree(out / "capacity-cluster", ignore_errors=True)
        cluster = RedisClusterServer(out / "capacity-cluster", appendfsync="always")
        cluster.start()
        try:
            masters = [ClusterMaster(f"shard {n + 1}", cluster, n) for n in range(cluster.masters)]
            runs.append(
                capacity_run(
                    "2 workers, store on a 3-master cluster",
                    queue,
                    masters,
                    cluster.url,
                    corpus,
                    env=child_env,
                    log_dir=log_dir,
                    cores=cores,
                    workers=2,
                )
            )
        finally:
            cluster.stop()
    finally:
        queue_server.stop()
        store_server.stop()
    return runs


def markdown(runs: Sequence[CapacityRun]) -> str:
    """The capacity inputs as a Markdown table (microseconds of CPU, commands and bytes per event)."""
    lines = [
        "| run | events/s | web CPU/cb | worker CPU/event | queue Redis CPU/event | store Redis CPU/event "
        "(per shard) | commands/event queue, store | bytes in/event queue, store | bytes per final call "
        "| calls complete |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for run in runs:
        shards = " / ".join(f"{side.cpu_us:.1f}" for side in run.store)
        store_commands = sum(side.commands for side in run.store)
        store_bytes = sum(side.bytes_in for side in run.store)
        lines.append(
            f"| {run.label} | {run.events_per_s:,.0f} | {run.web_cpu_us:.0f} us | {run.worker_cpu_us:.0f} us "
            f"| {run.queue.cpu_us:.1f} us | {shards} us | {run.queue.commands:.1f}, {store_commands:.1f} "
            f"| {run.queue.bytes_in:,.0f}, {store_bytes:,.0f} | {run.bytes_per_final_call:,.0f} "
            f"| {run.complete_calls:,} of {run.calls:,} |"
        )
    return "\n".join(lines) + "\n"
