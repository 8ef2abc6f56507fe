"""End-to-end lag: from the 204 a callback got to the moment its effect is readable in the store.

``callstate web`` and two ``callstate worker`` processes run; the load generator sends progress
callbacks open-loop at a fixed rate and writes down when each 204 arrived. A call's events come a
block of calls apart (256 ms at 1,000/s), so each one moves the call to a new version:
``SequenceNumber`` n becomes version n + 1, which the worker publishes on the change stream
(``callstate:{callstate}:changes``) right after committing it. The stream entry's ID is Redis's
clock in milliseconds when it was added (the same clock as the client's, on one machine), so
lag = entry time - 204 time, to the millisecond. Events whose version was merged with another's
(none, normally) are counted as unmatched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench import designs
from bench.corpus import HOST, Corpus
from bench.drain import job_lines, start_workers
from bench.loadgen import LoadResult, run_loadgen
from bench.procs import wait_until
from bench.profile import Profiler
from bench.receiver import Cores
from bench.redisstack import BenchRedis
from callstate import keys


@dataclass(frozen=True, slots=True)
class LagResult:
    """Lag of ``matched`` events at ``rate`` events/s (milliseconds), and the 204 latencies."""

    rate: float
    events: int
    matched: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ack_p50_ms: float
    ack_p99_ms: float
    loadgen_cpu_s: float
    #: The jobs the workers ran: how many, and how many events each carried on average.
    jobs: int
    events_per_job: float


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else float("nan")


def _stream_versions(redis: BenchRedis) -> dict[tuple[str, int], float]:
    """(CallSid, version) -> Unix seconds at which the change stream got it."""
    seen: dict[tuple[str, int], float] = {}
    start = "-"
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = redis.client.xrange(  # type: ignore[assignment]
            keys.changes(0), min=start, count=10_000
        )
        for entry_id, fields in entries:
            millis = int(entry_id.split(b"-")[0])
            key = (fields[b"call"].decode(), int(fields[b"version"]))
            seen.setdefault(key, millis / 1000)
        if len(entries) < 10_000:
            return seen
        start = "(" + entries[-1][0].decode()


def lag(
    redis: BenchRedis,
    corpus: Corpus,
    *,
    rate: float,
    seconds: float,
    env: Mapping[str, str],
    log_dir: Path,
    cores: Cores,
    workers: int = 2,
    profiler: Profiler | None = None,
) -> LagResult:
    """Send ``rate * seconds`` callbacks open-loop with ``workers`` workers running; measure lag."""
    redis.flush()
    acks_path = log_dir / "lag-acks.txt"
    web, port = designs.start(designs.CALLSTATE, env, log_dir, cores.server)
    running = start_workers(workers, env, log_dir, name="lag-worker")
    try:
        count = min(int(rate * seconds), corpus.requests)
        profile = profiler.start(running[0], "worker-lag", seconds) if profiler else None
        load: LoadResult = run_loadgen(
            port, corpus.path, count=count, rate=rate, host=HOST, core=cores.load, acks=acks_path
        )
        # Every answered callback should end up as one stream entry; if some never do, the
        # unmatched count in the result says so.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: redis.client.xlen(keys.changes(0)) >= load.answered, 30, "the changes")
        if profile is not None:
            profile.finish()
    finally:
        for worker in running:
            worker.stop()
        web.stop()
    jobs = job_lines(*(worker.log_path for worker in running))
    published = _stream_versions(redis)
    lags = []
    for line in acks_path.read_text().splitlines():
        sid, sequence, acked = line.split()
        at = published.get((sid, int(sequence) + 1))
        if at is not None:
            lags.append((at - float(acked)) * 1000)
    return LagResult(
        rate=load.rate,
        events=load.answered,
        matched=len(lags),
        p50_ms=_percentile(lags, 50),
        p90_ms=_percentile(lags, 90),
        p99_ms=_percentile(lags, 99),
        max_ms=max(lags, default=float("nan")),
        ack_p50_ms=load.p50_ms,
        ack_p99_ms=load.p99_ms,
        loadgen_cpu_s=load.cpu_seconds,
        jobs=sum(job.jobs for job in jobs),
        events_per_job=sum(job.events for job in jobs) / max(sum(job.jobs for job in jobs), 1),
    )
