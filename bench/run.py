"""The benchmark driver (``make bench``): every phase of issue 4's benchmark, one table at the end.

Phases, in order, all against one private redis-server (``deploy/redis.conf``: AOF, fsync always):

1. receivers: each design of :data:`bench.designs.DESIGNS` at its maximum rate under wrk (server on
   core 0, wrk and Redis on core 1); then callstate open-loop at half its maximum rate, and again
   at its maximum with ``appendfsync everysec``;
2. RQ baselines: one ``rq worker`` on no-op jobs (SimpleWorker, then the forking Worker);
3. workers: a pre-filled queue of realistic events drained by two ``callstate worker`` processes,
   with Redis commands per event and memory per call;
4. end-to-end lag at 1,000 events/s.

Results go to ``bench/out/`` (``results.md``, ``results.json``, ``results.png``, the processes' logs);
a complete run also copies the chart to ``bench/results.png``. Every child process is stopped at
the end, on Ctrl-C and on SIGTERM. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import FrameType

from bench import capacity, designs, machine, micro, pages, report
from bench.corpus import Corpus, history_corpus, progress_corpus
from bench.drain import DrainResult, drain
from bench.lag import lag
from bench.procs import ROOT, stop_all
from bench.profile import Profiler
from bench.receiver import Cores, ReceiverResult, closed_loop, open_loop, running
from bench.redisstack import BenchRedis
from bench.rqbaseline import WORKER_CLASSES, rq_baseline, sample_params
from tests.tcpproxy import TcpProxy

_STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line with the time since the start."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each measured run")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up before each wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=100_000, help="distinct callbacks for wrk")
    parser.add_argument("--drain-events", type=int, default=30_000, help="distinct events to drain")
    parser.add_argument("--baseline-jobs", type=int, default=2_000, help="no-op jobs, SimpleWorker")
    parser.add_argument("--forking-jobs", type=int, default=300, help="no-op jobs, forking Worker (0: skip)")
    parser.add_argument("--lag-rate", type=float, default=1_000, help="events/s of the lag test")
    parser.add_argument(
        "--designs",
        default=",".join(d.key for d in designs.DESIGNS),
        help="comma-separated receiver designs to run",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="wrk runs per design, the fastest one kept (a busy machine only ever slows a run down)",
    )
    parser.add_argument(
        "--appendfsync",
        choices=("always", "everysec"),
        default="always",
        help="Redis fsync policy for every phase (deploy/redis.conf: always)",
    )
    parser.add_argument(
        "--redis-delay-ms",
        type=float,
        default=2.0,
        help="latency added each way to Redis for the extra web and worker rows (0: skip them)",
    )
    parser.add_argument(
        "--far-connections",
        type=int,
        default=256,
        help="wrk and open-loop connections with Redis farther away (64 bound the rate by latency)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the callstate web and a worker")
    parser.add_argument("--quick", action="store_true", help="short runs, small corpora: checks the harness")
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="only the capacity inputs: queue and store on separate Redis, 1 and 2 "
        "workers, then the store on a 3-master cluster (bench/out/capacity.md)",
    )
    parser.add_argument(
        "--pages", type=int, default=5, help="live pages open in the live-page phase (0: skip it)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.requests = 3, 1, 30_000
        args.drain_events, args.baseline_jobs, args.forking_jobs = 6_000, 300, 50
    return args


@dataclass(frozen=True, slots=True)
class Corpora:
    receiver: Corpus
    warmup: Corpus
    history: Corpus
    lag: Corpus


def make_corpora(args: argparse.Namespace, directory: Path) -> Corpora:
    say(f"signing {args.requests:,} callbacks for wrk, {args.drain_events:,}+ for the workers")
    lag_count = int(args.lag_rate * args.seconds)
    return Corpora(
        receiver=progress_corpus(directory / "receiver.tsv", args.requests, seed=1),
        warmup=progress_corpus(directory / "warmup.tsv", 10_000, seed=2),
        history=history_corpus(directory / "history.tsv", args.drain_events, seed=3),
        lag=progress_corpus(directory / "lag.tsv", lag_count, seed=4),
    )


def run_receivers(
    args: argparse.Namespace, results: report.Results, redis: BenchRedis, corpora: Corpora, ctx: Context
) -> None:
    """Phase 1: every chosen design at its maximum rate; callstate also open-loop and everysec."""
    chosen = {key.strip() for key in args.designs.split(",") if key.strip()}
    measure = partial(
        closed_loop,
        corpus=corpora.receiver,
        warmup_corpus=corpora.warmup,
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        cores=ctx.cores,
    )
    for design in designs.DESIGNS:
        if design.key not in chosen:
            continue
        with running(design, redis, ctx.env, ctx.logs, ctx.cores) as server:
            say(f"{design.key}: wrk {args.seconds:.0f} s, {args.connections} connections")
            profiler = ctx.profiler if design is designs.CALLSTATE else None
            runs = [measure(server, redis, profiler=profiler if n == 0 else None) for n in range(args.repeat)]
            measured = max(runs, key=lambda run: run.rate)
            results.receivers.append(measured)
            say(f"{design.key}: {measured.rate:,.0f}/s, p99 {measured.p99_ms:.1f} ms")
            if design is designs.CALLSTATE:
                rate = measured.rate / 2
                say(f"callstate: open loop at {rate:,.0f}/s for {args.seconds:.0f} s")
                # Continue in the corpus where wrk stopped: every body sent to this server is new.
                offset = measured.requests % corpora.receiver.requests
                half = open_loop(
                    server, corpora.receiver, rate=rate, seconds=args.seconds, cores=ctx.cores, offset=offset
                )
                results.half_rate = half
                say(f"callstate: p99 {half.p99_ms:.1f} ms at {half.rate:,.0f}/s")
        if design is designs.CALLSTATE and args.appendfsync == "always":
            redis.appendfsync("everysec")
            try:
                with running(design, redis, ctx.env, ctx.logs, ctx.cores) as server:
                    say("callstate: wrk again with appendfsync everysec")
                    runs = [measure(server, redis, suffix="+everysec") for _ in range(args.repeat)]
                    results.receivers.append(max(runs, key=lambda run: run.rate))
            finally:
                redis.appendfsync(args.appendfsync)
        if design is designs.CALLSTATE and args.pages > 0:
            # Issue 11: what open live pages take from callbacks. One server, the change stream
            # moving throughout; wrk runs alternate without and with the pages, so that both sides
            # see the same process, store and machine.
            env = designs.environment(redis.url, SECRET_KEY=pages.SECRET_KEY)
            with running(design, redis, env, ctx.logs, ctx.cores) as server:
                pages.fill(redis.client)
                with pages.stream_moving(redis.client, PAGES_STREAM_RATE):
                    say(
                        f"callstate: wrk without and with {args.pages} live pages open, "
                        f"{PAGES_STREAM_RATE:,} changes/s"
                    )
                    closed, opened = [], []
                    for _ in range(max(args.repeat, 2)):
                        closed.append(measure(server, redis, suffix=NO_PAGE_SUFFIX))
                        with pages.pages_open(server, args.pages):
                            opened.append(measure(server, redis, suffix=pages_suffix(args)))
                    results.receivers.append(max(closed, key=lambda run: run.rate))
                    results.receivers.append(max(opened, key=lambda run: run.rate))
        if design is designs.CALLSTATE and args.redis_delay_ms > 0:
            run_far(args, results, redis=redis, measure=measure, corpora=corpora, ctx=ctx)


def run_far(
    args: argparse.Namespace,
    results: report.Results,
    *,
    redis: BenchRedis,
    measure: Callable[..., ReceiverResult],
    corpora: Corpora,
    ctx: Context,
) -> None:
    """callstate web with Redis ``--redis-delay-ms`` farther away each way: wrk with the usual
    connections and with ``--far-connections``, then an open loop at half the loopback maximum.

    A closed loop of C connections cannot exceed C / latency (Little's law): with 64 connections
    and a 10 ms answer that is 6,400/s whatever the server could do, so the far maximum is
    measured with more connections, and the open loop (what Twilio sends: each callback its own
    request, not a fixed number of clients) shows whether half the loopback rate is kept up.
    """
    loopback = results.receiver(designs.CALLSTATE.key)
    with (
        delayed_redis(redis, args.redis_delay_ms) as url,
        running(designs.CALLSTATE, redis, designs.environment(url), ctx.logs, ctx.cores) as server,
    ):
        for connections in dict.fromkeys((args.connections, args.far_connections)):
            say(f"callstate: wrk, {connections} connections, Redis {args.redis_delay_ms:g} ms away each way")
            suffix = delay_suffix(args, connections)
            runs = [
                measure(server, redis, suffix=suffix, connections=connections) for _ in range(args.repeat)
            ]
            results.receivers.append(max(runs, key=lambda run: run.rate))
        if loopback is not None:
            rate = loopback.rate / 2
            say(f"callstate: open loop at {rate:,.0f}/s, Redis {args.redis_delay_ms:g} ms away each way")
            results.half_rate_far = open_loop(
                server,
                corpora.receiver,
                rate=rate,
                seconds=args.seconds,
                cores=ctx.cores,
                connections=args.far_connections,
            )
            say(f"callstate: {results.half_rate_far.rate:,.0f}/s, p99 {results.half_rate_far.p99_ms:.1f} ms")


def drain_far(args: argparse.Namespace, redis: BenchRedis, corpus: Corpus, ctx: Context) -> DrainResult:
    """The drain again, the workers reaching Redis ``--redis-delay-ms`` farther away each way (the
    pre-fill goes the short way: only the workers are measured here)."""
    say(f"workers: the same drain with Redis {args.redis_delay_ms:g} ms away each way")
    with delayed_redis(redis, args.redis_delay_ms) as url:
        result, _ = drain(
            redis, corpus, env=ctx.env, worker_env=designs.environment(url), log_dir=ctx.logs, cores=ctx.cores
        )
    say(f"workers: {result.events_per_s:,.0f} events/s")
    return result


#: Changes a second on the stream while the pages are open during a wrk run (the pages' own phase
#: tries 300 and 3,000; the feed skips to the end above ~1,000).
PAGES_STREAM_RATE = 1_000


NO_PAGE_SUFFIX = "+stream moving, no page open"


def pages_suffix(args: argparse.Namespace) -> str:
    return f"+{args.pages} live pages open"


def delay_suffix(args: argparse.Namespace, connections: int) -> str:
    return f"+Redis +{args.redis_delay_ms:g} ms each way, {connections} connections"


@contextlib.contextmanager
def delayed_redis(redis: BenchRedis, delay_ms: float) -> Iterator[str]:
    """A Redis URL ``delay_ms`` farther away each way than ``redis`` (tests/tcpproxy.py: a managed
    Redis is a millisecond or two away, not on loopback)."""
    proxy = TcpProxy([("127.0.0.1", redis.port)], delay=delay_ms / 1000)
    try:
        yield f"redis://127.0.0.1:{proxy.port}/0"
    finally:
        proxy.close()


@dataclass(frozen=True, slots=True)
class Context:
    """Where children log, where they run, their environment, the optional profiler."""

    logs: Path
    cores: Cores
    env: dict[str, str]
    profiler: Profiler | None


def run(args: argparse.Namespace) -> report.Results:
    out: Path = args.out
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    for stale in out.glob("profile-*"):
        stale.unlink()
    two_cores = (os.cpu_count() or 1) >= 2
    cores = Cores(server=0, load=1) if two_cores else Cores(None, None)
    redis = BenchRedis(out / "redis", dict(os.environ), core=cores.load)
    redis.appendfsync(args.appendfsync)
    say(f"redis-server {redis.url} (appendfsync {args.appendfsync})")
    env = designs.environment(redis.url)
    ctx = Context(logs, cores, env, Profiler(out, cores.load) if args.profile else None)
    results = report.Results(
        machine=machine.describe(redis.version()),
        settings={k: str(v) for k, v in vars(args).items()},
        redis_delay_ms=args.redis_delay_ms,
    )
    results.notes.append(f"load average at start: {machine.load_average()}")
    busy_at_start, started = machine.busy_seconds(), time.monotonic()
    if not two_cores:
        results.notes.append("fewer than 2 cores: nothing pinned")
    corpora = make_corpora(args, out)

    run_receivers(args, results, redis, corpora, ctx)
    for r in results.receivers:
        if not r.unique_bodies and r.key != "bare":  # bare reads no body: repeats cost it nothing
            distinct = corpora.receiver.requests
            results.notes.append(f"{r.key}: wrk sent more than the {distinct:,} distinct callbacks")

    payload = sample_params(corpora.receiver.path)
    for label, jobs in (("SimpleWorker", args.baseline_jobs), ("Worker (forking)", args.forking_jobs)):
        if jobs > 0 and label in WORKER_CLASSES:
            say(f"RQ {label}: {jobs:,} no-op jobs")
            baseline = rq_baseline(
                label, redis, jobs=jobs, payload=payload, env=env, log_dir=logs, core=cores.server
            )
            results.baselines.append(baseline)
            say(f"RQ {label}: {baseline.jobs_per_s:,.0f} jobs/s")

    say(f"workers: pre-fill {corpora.history.requests:,} callbacks, then drain with 2 workers")
    results.drain, results.memory = drain(
        redis, corpora.history, env=env, log_dir=logs, cores=cores, profiler=ctx.profiler
    )
    say(f"workers: {results.drain.events_per_s:,.0f} events/s")
    if args.redis_delay_ms > 0:
        results.drain_delayed = drain_far(args, redis, corpora.history, ctx)

    say(f"lag: {args.lag_rate:,.0f} events/s for {args.seconds:.0f} s with 2 workers")
    results.lag = lag(
        redis,
        corpora.lag,
        rate=args.lag_rate,
        seconds=args.seconds,
        env=env,
        log_dir=logs,
        cores=cores,
        profiler=ctx.profiler,
    )
    say(f"lag: p99 {results.lag.p99_ms:.0f} ms")
    if args.pages > 0:
        say(f"live pages: the web process's CPU with 0 and {args.pages} pages open, stream moving")
        results.pages = pages.measure(
            redis, out, pages=args.pages, rates=[300, 3000], seconds=min(args.seconds, 8), cores=cores
        )
        say(f"live pages: {max(r.cpu_share for r in results.pages):.1%} of a core at most")
    results.metrics_cost = micro.counting()
    say(f"metrics: {results.metrics_cost[0][1]:.1f} us per callback counted")
    if results.lag.p99_ms > args.seconds * 1000 / 4:
        results.notes.append(
            f"end-to-end lag grew through the lag test ({results.lag.events_per_job:.1f} events per job): "
            "the workers did not keep up with the arrival rate"
        )
    redis.stop()
    stop_all()
    results.notes.append(f"load average at end: {machine.load_average()}")
    elapsed = time.monotonic() - started
    other = machine.busy_seconds() - busy_at_start - machine.own_cpu_seconds()
    results.notes.append(
        f"other processes on the machine used {other:,.0f} CPU-seconds during the bench's {elapsed:.0f} s "
        f"({other / elapsed:.2f} cores on average): the 'other load' column shows it per run"
    )
    return results


def run_capacity(args: argparse.Namespace) -> int:
    """``--capacity``: the runs of :mod:`bench.capacity`, written to ``capacity.md`` and ``.json``."""
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    two_cores = (os.cpu_count() or 1) >= 2
    cores = Cores(server=0, load=1) if two_cores else Cores(None, None)
    say(f"capacity: {args.drain_events:,} events, 1 and 2 workers, then a 3-master store cluster")
    try:
        runs = capacity.run_all(
            args.out, events=args.drain_events, env=dict(os.environ), cores=cores, log_dir=logs
        )
    except KeyboardInterrupt:
        print("interrupted: stopping every process the bench started", file=sys.stderr)
        return 130
    finally:
        stop_all()
    text = capacity.markdown(runs)
    (args.out / "capacity.md").write_text(text)
    (args.out / "capacity.json").write_text(json.dumps([asdict(run) for run in runs], indent=2))
    print(text)
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _terminate)
    if args.capacity:
        return run_capacity(args)
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("interrupted: stopping every process the bench started", file=sys.stderr)
        return 130
    finally:
        stop_all()
    text = report.write(results, args.out)
    print()
    print(text)
    defaults = parse_args([])
    complete = not args.quick and args.designs == defaults.designs and args.appendfsync == "always"
    if complete:
        shutil.copyfile(args.out / "results.png", ROOT / "bench" / "results.png")
    say(f"written: {args.out}/results.md, results.json, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
