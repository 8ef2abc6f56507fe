"""The RQ baselines: one ``rq worker`` process draining a queue of no-op jobs, one job per event.

This is what a worker costs before it does any work of its own: RQ's per-job bookkeeping (fetch,
registries, heartbeats, result) plus enqueueing the job, counted in jobs per second, CPU per job and
Redis commands per job. The jobs carry the parameters of one callback, as the naive design
enqueues them; the worker is run the way operators run it (``rq worker``, default logging).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from rq import Queue
from rq.job import Job

from bench.designs import BIN
from bench.peers.noop import NOOP, QUEUE
from bench.procs import Child
from bench.redisstack import BenchRedis

#: The worker classes measured, by the name the table shows.
WORKER_CLASSES = {
    "SimpleWorker": "rq.worker.SimpleWorker",
    "Worker (forking)": "rq.worker.Worker",
}


@dataclass(frozen=True, slots=True)
class BaselineResult:
    """One worker class on ``jobs`` no-op jobs."""

    worker: str
    jobs: int
    seconds: float
    jobs_per_s: float
    cpu_us_per_job: float
    commands_per_job: float
    commands: dict[str, int] = field(default_factory=dict)


def sample_params(corpus: Path) -> dict[str, str]:
    """The parameters of the corpus's first callback (the payload of every no-op job)."""
    with corpus.open() as lines:
        body = next(lines).rstrip("\n").split("\t")[2]
    return dict(parse_qsl(body, keep_blank_values=True))


def _burst_worker(
    name: str, worker_class: str, redis_url: str, *, env: Mapping[str, str], log_dir: Path, core: int | None
) -> Child:
    argv = [str(BIN / "rq"), "worker", "--burst", "--worker-class", worker_class, "--url", redis_url, QUEUE]
    return Child(name, argv, env=env, log_dir=log_dir, core=core)


def rq_baseline(
    label: str,
    redis: BenchRedis,
    *,
    jobs: int,
    payload: dict[str, str],
    env: Mapping[str, str],
    log_dir: Path,
    core: int | None,
    timeout: float = 120,
) -> BaselineResult:
    """Enqueue ``jobs`` no-op jobs, drain them with one burst worker of class ``label``."""
    worker_class = WORKER_CLASSES[label]
    key = worker_class.rsplit(".", 1)[-1].lower()
    redis.flush()

    # The fixed cost of a worker that starts, finds nothing and exits: subtracted from the CPU.
    def worker(name: str) -> Child:
        return _burst_worker(name, worker_class, redis.url, env=env, log_dir=log_dir, core=core)

    idle = worker(f"rq-{key}-idle").wait_exit(timeout)
    redis.flush()
    redis.reset_stats()
    queue = Queue(QUEUE, connection=redis.client)
    ids = [queue.enqueue(NOOP, payload).id for _ in range(jobs)]
    cpu = worker(f"rq-{key}").wait_exit(timeout) - idle
    commands = redis.command_calls()
    first, last = Job.fetch(ids[0], connection=redis.client), Job.fetch(ids[-1], connection=redis.client)
    if first.started_at is None or last.ended_at is None:
        raise RuntimeError(f"{label}: the jobs did not run (see {log_dir}/rq-{key}.log)")
    seconds = (last.ended_at - first.started_at).total_seconds()
    return BaselineResult(
        worker=label,
        jobs=jobs,
        seconds=seconds,
        jobs_per_s=jobs / seconds,
        cpu_us_per_job=cpu / jobs * 1e6,
        commands_per_job=sum(commands.values()) / jobs,
        commands=dict(sorted(commands.items(), key=lambda item: -item[1])),
    )
