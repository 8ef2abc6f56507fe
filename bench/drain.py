"""The workers' measurement: a pre-filled queue of realistic events drained by ``callstate worker``.

1. With no worker running, the history corpus (several events per call, out of order, some
   delivered twice) goes through ``callstate web`` as fast as 64 connections allow, so the queue
   holds the batches production would hold.
2. Two ``callstate worker`` processes (the Procfile's command) drain it. The drain time runs from
   the start of the first job to the end of the last, read from the workers' job log lines, so
   process start-up is not counted.
3. Redis commands per event cover both sides (enqueue and reconcile), from ``CONFIG RESETSTAT``
   before step 1 to ``INFO commandstats`` after step 2.
4. Every call of the corpus is then checked: its event set holds exactly its distinct events and
   its state exists. Memory per final call is measured on the calls that ended and had a recording.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import designs
from bench.corpus import HOST, Corpus
from bench.loadgen import LoadResult, run_loadgen
from bench.procs import Child, wait_until
from bench.profile import Profile, Profiler
from bench.receiver import Cores
from bench.redisstack import BenchRedis
from callstate import eventset, keys

#: Keys whose memory is shared by every call (callstate.keys): every key with a global hash tag,
#: ``{callstate}`` or a bucket's ``{callstate:<bucket>}``.
GLOBAL_KEYS_PATTERN = f"{keys.PREFIX}:{{{keys.PREFIX}*"


@dataclass(frozen=True, slots=True)
class DrainResult:
    """The drain of ``events`` callbacks (``distinct`` of them distinct) for ``calls`` calls."""

    events: int
    distinct: int
    calls: int
    workers: int
    jobs: int
    events_per_job: float
    prefill_rate: float
    prefill_web_cpu_us: float
    seconds: float
    events_per_s: float
    worker_cpu_us: float
    commands_per_event: float
    reconciled_calls: int
    incomplete_calls: int
    commands: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """Redis memory per final call with a recording (every key of its record, and its share of the
    global keys)."""

    sampled_calls: int
    mean_events: float
    call_keys_bytes: float
    global_share_bytes: float
    bytes_per_call: float
    used_memory_delta_per_call: float


@dataclass(frozen=True, slots=True)
class JobLine:
    """One ``job`` log line of a worker: when it started and ended (Unix seconds), how many events."""

    started: float
    ended: float
    events: int
    #: RQ jobs it applied: itself and those it took over (workers.jobs).
    jobs: int = 1


def job_lines(*logs: Path) -> list[JobLine]:
    """The job lines of the workers' JSON logs so far."""
    lines = []
    for log in logs:
        for raw in log.read_text(errors="replace").splitlines():
            if '"event":"job"' not in raw:
                continue
            try:
                line: dict[str, Any] = json.loads(raw)
            except ValueError:  # the line a worker is writing right now
                continue
            ended = datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()
            lines.append(
                JobLine(ended - line["ms"] / 1000, ended, int(line["events"]), int(line.get("jobs", 1)))
            )
    return lines


def start_workers(count: int, env: Mapping[str, str], log_dir: Path, name: str = "worker") -> list[Child]:
    """``count`` Procfile workers, returned once each has logged ``worker_start``."""
    workers = [
        Child(f"{name}-{n}", designs.procfile()["worker"], env=env, log_dir=log_dir)
        for n in range(1, count + 1)
    ]
    for worker in workers:

        def started(worker: Child = worker) -> bool:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.output()[-3000:]}")
            return '"worker_start"' in worker.output()

        wait_until(started, 30, worker.name, poll=0.01)
    return workers


def prefill_queue(web: Child, port: int, corpus: Corpus, cores: Cores) -> tuple[float, LoadResult]:
    """Send every callback of ``corpus`` through the running ``callstate web`` as fast as 64
    connections allow; its CPU seconds meanwhile, and the load generator's result. The last
    answers are waited for as long as it takes (a busy machine is slow, not wrong)."""
    web_cpu = web.cpu()
    # A generous wait for the last answers: on a busy machine the pre-fill is slow, not wrong.
    result = run_loadgen(
        port, corpus.path, count=corpus.requests, rate=0, host=HOST, core=cores.load, drain=120
    )
    web_cpu = web.cpu() - web_cpu
    if result.statuses != {"204": corpus.requests}:
        raise RuntimeError(f"pre-fill answers: {result.statuses} (see {web.log_path})")
    return web_cpu, result


def drain(
    redis: BenchRedis,
    corpus: Corpus,
    *,
    env: Mapping[str, str],
    log_dir: Path,
    cores: Cores,
    workers: int = 2,
    timeout: float = 180,
    profiler: Profiler | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> tuple[DrainResult, MemoryResult]:
    """Pre-fill through ``callstate web``, drain with ``workers`` workers, check, measure memory.
    ``worker_env`` (default ``env``) is the workers' environment: another way to the same Redis."""
    redis.flush()
    memory_before = redis.used_memory()
    redis.reset_stats()
    web, port = designs.start(designs.CALLSTATE, env, log_dir, cores.server)
    try:
        web_cpu, prefill = prefill_queue(web, port, corpus, cores)
        running = start_workers(workers, env if worker_env is None else worker_env, log_dir)
        cpu = sum(worker.cpu() for worker in running)
        logs = [worker.log_path for worker in running]
        profile: Profile | None = None
        if profiler is not None:
            profile = profiler.start(running[0], "worker-drain", 10)

        def drained() -> bool:
            return sum(line.events for line in job_lines(*logs)) >= corpus.requests

        wait_until(drained, timeout, "the workers to drain the queue", poll=0.1)
        cpu = sum(worker.cpu() for worker in running) - cpu
        commands = redis.command_calls()
        memory_after = redis.used_memory()
        if profile is not None:
            profile.finish()
        for worker in running:
            worker.stop()
    finally:
        web.stop()
    lines = job_lines(*logs)
    seconds = max(line.ended for line in lines) - min(line.started for line in lines)
    complete, incomplete = _check(redis, corpus)
    distinct = sum(corpus.expected_events.values())
    result = DrainResult(
        events=corpus.requests,
        distinct=distinct,
        calls=len(corpus.expected_events),
        workers=workers,
        jobs=sum(line.jobs for line in lines),
        events_per_job=corpus.requests / sum(line.jobs for line in lines),
        prefill_rate=prefill.rate,
        prefill_web_cpu_us=web_cpu / corpus.requests * 1e6,
        seconds=seconds,
        events_per_s=corpus.requests / seconds,
        worker_cpu_us=cpu / corpus.requests * 1e6,
        commands_per_event=sum(commands.values()) / corpus.requests,
        reconciled_calls=complete,
        incomplete_calls=incomplete,
        commands=dict(sorted(commands.items(), key=lambda item: -item[1])),
    )
    return result, _memory(redis, corpus, memory_after - memory_before)


def _check(redis: BenchRedis, corpus: Corpus) -> tuple[int, int]:
    """(calls whose state exists and whose event set is complete, the others)."""
    sids = list(corpus.expected_events)
    pipe = redis.client.pipeline(transaction=False)
    for sid in sids:
        pipe.hmget(keys.call(sid), "events", "state")
    complete = sum(
        1
        for sid, (events, state) in zip(sids, pipe.execute(), strict=True)
        if state is not None and len(eventset.load(events)) == corpus.expected_events[sid]
    )
    return complete, len(sids) - complete


def _memory(redis: BenchRedis, corpus: Corpus, used_delta: int, sample: int = 300) -> MemoryResult:
    """Bytes per final call with a recording: every key of its record (``MEMORY USAGE``, every
    element), plus its share of the global indexes and change stream."""
    sids = random.Random(0).sample(corpus.final_with_recording, min(sample, len(corpus.final_with_recording)))
    per_call = redis.memory_usage([key for sid in sids for key in keys.of_record(sid)])
    shared = redis.memory_usage([key.decode() for key in redis.client.scan_iter(GLOBAL_KEYS_PATTERN, 1000)])
    calls = len(corpus.expected_events)
    call_bytes = per_call / max(len(sids), 1)
    return MemoryResult(
        sampled_calls=len(sids),
        mean_events=sum(corpus.expected_events[sid] for sid in sids) / max(len(sids), 1),
        call_keys_bytes=call_bytes,
        global_share_bytes=shared / calls,
        bytes_per_call=call_bytes + shared / calls,
        used_memory_delta_per_call=used_delta / calls,
    )
