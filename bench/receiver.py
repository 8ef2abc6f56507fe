"""Receiver measurements: a design at its maximum rate (wrk, closed loop) and at a fixed rate (open loop).

A design runs pinned to the server core with Redis flushed before it starts; it is warmed up with a
separate corpus (so the measured run's bodies are all unique), then measured: requests per second,
latency, and the CPU the server's process tree and redis-server spent per request, read from
``/proc`` around the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import designs
from bench.corpus import HOST, Corpus
from bench.loadgen import LoadResult, run_loadgen
from bench.machine import busy_seconds
from bench.procs import Child
from bench.profile import Profiler
from bench.redisstack import BenchRedis
from bench.wrk import WrkResult, run_wrk


@dataclass(frozen=True, slots=True)
class Cores:
    """Where things run: the server on one core, load generator and Redis on the other."""

    server: int | None
    load: int | None


@dataclass(frozen=True, slots=True)
class ReceiverResult:
    """One design at its maximum rate. CPU figures in microseconds per request."""

    key: str
    label: str
    rate: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    non_2xx: int
    server_cpu_us: float
    redis_cpu_us: float
    wrk_cpu_us: float
    wrk_core_share: float
    #: Cores' worth of CPU that other processes (not the server, Redis or wrk) used meanwhile:
    #: above ~0.1 the machine was not quiet and the rate is low by about that much.
    other_cores: float
    unique_bodies: bool

    @property
    def per_core_second(self) -> float:
        """Callbacks per second of server CPU: the rate on an uncontended core, noise aside."""
        return 1e6 / self.server_cpu_us if self.server_cpu_us else float("nan")


@dataclass(frozen=True, slots=True)
class Server:
    """A running design."""

    design: designs.Design
    child: Child
    port: int


@contextmanager
def running(
    design: designs.Design, redis: BenchRedis, env: Mapping[str, str], log_dir: Path, cores: Cores
) -> Iterator[Server]:
    """``design`` started on a flushed Redis; stopped on exit."""
    redis.flush()
    child, port = designs.start(design, env, log_dir, cores.server)
    try:
        yield Server(design, child, port)
    finally:
        child.stop()


def closed_loop(
    server: Server,
    redis: BenchRedis,
    corpus: Corpus,
    warmup_corpus: Corpus,
    *,
    seconds: float,
    warmup: float,
    connections: int,
    cores: Cores,
    profiler: Profiler | None = None,
    suffix: str = "",
) -> ReceiverResult:
    """Warm ``server`` up, then drive it with wrk for ``seconds`` and measure it."""

    def wrk(path: Path, duration: float) -> WrkResult:
        port, core = server.port, cores.load
        return run_wrk(port, path, seconds=duration, connections=connections, core=core, host=HOST)

    wrk(warmup_corpus.path, warmup)
    server_cpu, redis_cpu, busy = server.child.cpu(), redis.cpu(), busy_seconds()
    name = f"web-{server.design.key}{suffix}"
    profile = profiler.start(server.child, name, seconds, gil_only=True) if profiler else None
    result = wrk(corpus.path, seconds)
    server_cpu, redis_cpu = server.child.cpu() - server_cpu, redis.cpu() - redis_cpu
    other = busy_seconds() - busy - server_cpu - redis_cpu - result.cpu_seconds
    if profile is not None:
        profile.finish()
    count = max(result.requests, 1)
    return ReceiverResult(
        key=server.design.key + suffix,
        label=server.design.label,
        rate=result.rate,
        requests=result.requests,
        seconds=result.seconds,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        p999_ms=result.p999_ms,
        errors=result.errors,
        non_2xx=result.non_2xx,
        server_cpu_us=server_cpu / count * 1e6,
        redis_cpu_us=redis_cpu / count * 1e6,
        wrk_cpu_us=result.cpu_seconds / count * 1e6,
        wrk_core_share=result.cpu_seconds / result.seconds,
        other_cores=max(other, 0) / result.seconds,
        unique_bodies=result.requests <= corpus.requests,
    )


def open_loop(
    server: Server,
    corpus: Corpus,
    *,
    rate: float,
    seconds: float,
    cores: Cores,
    offset: int = 0,
    connections: int = 64,
) -> LoadResult:
    """Requests at a fixed ``rate`` for ``seconds``, from line ``offset`` of ``corpus``, over at
    most ``connections`` at once (each carries one request at a time, as Twilio's do)."""
    count = min(int(rate * seconds), corpus.requests)
    return run_loadgen(
        server.port,
        corpus.path,
        count=count,
        rate=rate,
        host=HOST,
        core=cores.load,
        offset=offset,
        connections=connections,
    )
