"""The chaos soak: the real processes under steady simulated traffic while faults are injected.

Two web processes behind a router (:class:`tests.tcpproxy.TcpProxy`, as a platform's) and two
workers, all on a redis-server with AOF (``appendfsync always``) reached through a second proxy
that can add latency. ``callstate simulate``'s sender (:mod:`callstate.simulator`) sends realistic
traffic at a steady rate the whole time, and on a schedule: a worker is SIGKILLed (and another
started, as a supervisor would), a web process is SIGKILLed and restarted, Redis is SIGKILLed and
restarted, Redis is paused (SIGSTOP) for 8 s, Redis is full (``maxmemory`` with ``noeviction``) for a
while, and 2 ms is added each way between the processes and Redis.

At the end every call is read back through the read API and compared with what its acknowledged
callbacks make (:func:`callstate.simulation.expected_states`): every 2xx must be in the store. Also
checked: no 5xx but 503, no answer slower than 5 s, the store caught up, and each process's memory
(RSS) stayed under a bound. ``python -m tests.soak --seconds 600`` (``make soak``) prints a table,
fault by fault, for bench/RESULTS.md; ``tests/test_soak.py`` runs a short version in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from callstate import tokens
from callstate.simulation import Delivery, Plan, Signer, Tally, expected_states, plan
from callstate.simulator import Target, client, now_utc, read_back, send
from tests.procs import Process, environment, procfile, wait_until
from tests.redisserver import RedisServer, free_port
from tests.tcpproxy import TcpProxy
from tests.twiliosign import TOKEN
from workers.reduce import reduce

SECRET: Final = "soak-secret-key-0123456789abcdefghijklmnop"
#: The longest any callback may wait for its answer (README, "Failure modes").
ANSWER_BOUND: Final = 5.0
#: Each process's resident memory must stay under this (MiB).
RSS_BOUND_MIB: Final = 300
#: Callbacks per call in the simulator's traffic, about (for sizing a plan).
_CALLBACKS_PER_CALL: Final = 1.6


@dataclass
class Attempt:
    at: float
    answer: str
    seconds: float


class TimedTally(Tally):
    """A :class:`Tally` that also remembers when each attempt was answered."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.attempts: list[Attempt] = []

    def answer(self, answer: str, seconds: float) -> None:
        super().answer(answer, seconds)
        self.attempts.append(Attempt(self.clock(), answer, seconds))


@dataclass
class Fault:
    """One fault: what it does, when it started and how long it lasted (seconds into the run)."""

    name: str
    inject: Callable[[], None]
    heal: Callable[[], None]
    hold: float
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Outcome:
    seconds: float
    tally: TimedTally
    faults: list[Fault]
    checked_calls: int
    acknowledged: int
    wrong: dict[str, str]
    catch_up: float
    rss_mib: dict[str, float] = field(default_factory=dict)

    def other_5xx(self) -> int:
        return sum(
            n for answer, n in self.tally.answers.items() if answer.startswith("5") and answer != "503"
        )

    def problems(self) -> list[str]:
        out = []
        if self.wrong:
            out.append(f"{len(self.wrong)} calls not as expected: {sorted(self.wrong.items())[:5]}")
        if self.other_5xx():
            out.append(f"5xx other than 503: {dict(self.tally.answers)}")
        if self.tally.slowest > ANSWER_BOUND:
            out.append(f"an answer took {self.tally.slowest:.1f} s (bound {ANSWER_BOUND} s)")
        heavy = {name: mib for name, mib in self.rss_mib.items() if mib > RSS_BOUND_MIB}
        if heavy:
            out.append(f"RSS over {RSS_BOUND_MIB} MiB: {heavy}")
        if not self.acknowledged:
            out.append("no callback was acknowledged")
        return out

    def table(self) -> str:
        """Markdown, fault by fault: answers while it lasted, and until the first 2xx after it."""
        rows = [
            "| fault | at (s) | held (s) | answers | 2xx | 503 | refused/cut | slowest (s) "
            "| 2xx again after (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for fault in self.faults:
            window = [a for a in self.tally.attempts if fault.started <= a.at <= fault.ended + 1]
            ok = sum(a.answer.startswith("2") for a in window)
            busy = sum(a.answer == "503" for a in window)
            later = [a.at for a in self.tally.attempts if a.at >= fault.ended and a.answer.startswith("2")]
            again = f"{max(0.0, min(later) - fault.ended):.1f}" if later else "never"
            slowest = max((a.seconds for a in window), default=0.0)
            rows.append(
                f"| {fault.name} | {fault.started:.0f} | {fault.ended - fault.started:.1f} | {len(window):,} "
                f"| {ok:,} | {busy:,} | {len(window) - ok - busy:,} | {slowest:.2f} | {again} |"
            )
        return "\n".join(rows)

    def summary(self) -> str:
        answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.tally.answers.items()))
        rss = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(self.rss_mib.items()))
        return (
            f"{self.seconds:.0f} s, {len(self.tally.attempts):,} attempts ({answers}); "
            f"{self.acknowledged:,} callbacks acknowledged, {self.checked_calls:,} calls checked, "
            f"{len(self.wrong)} not as expected; store caught up {self.catch_up:.1f} s after the "
            f"traffic stopped; slowest answer {self.tally.slowest:.2f} s; peak RSS MiB: {rss}"
        )


class Cluster:
    """Redis (AOF, behind a latency proxy), two workers, two web processes behind a router."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis = RedisServer(directory / "redis", appendfsync="always")
        self.redis.start()
        self.redis_proxy = TcpProxy([("127.0.0.1", self.redis.port)])
        self.web_ports = [free_port(), free_port()]
        self.router = TcpProxy([("127.0.0.1", port) for port in self.web_ports])
        self.base_url = f"http://127.0.0.1:{self.router.port}"
        self.env = environment(
            REDIS_URL=f"redis://127.0.0.1:{self.redis_proxy.port}/0",
            TWILIO_AUTH_TOKEN=TOKEN,
            SECRET_KEY=SECRET,
            PUBLIC_BASE_URL=self.base_url,
            # A killed worker's job is retried this plus 15 s after it started (README).
            CALLSTATE_JOB_TIMEOUT="5",
        )
        self.webs: dict[int, Process] = {}
        self.workers: dict[int, Process] = {}
        self.generation = 0
        self.peak_rss: dict[str, float] = {}
        for index in range(2):
            self.start_web(index)
            self.start_worker(index)

    def _name(self, kind: str, index: int) -> str:
        self.generation += 1
        return f"{kind}{index}-{self.generation}"

    def start_web(self, index: int) -> None:
        port = self.web_ports[index]
        web = Process(
            self._name("web", index), procfile()["web"], {**self.env, "PORT": str(port)}, self.directory
        )
        self.webs[index] = web

        def ready() -> bool:
            if not web.alive():
                raise AssertionError(f"web exited:\n{web.output()}")
            return _listening(port)

        wait_until(ready, timeout=30, what="a web process")

    def start_worker(self, index: int) -> None:
        worker = Process(self._name("worker", index), procfile()["worker"], self.env, self.directory)
        self.workers[index] = worker
        wait_until(
            lambda: '"worker_start"' in worker.output() or not worker.alive(), timeout=30, what="worker"
        )

    def sample_rss(self) -> None:
        for kind, group in (("web", self.webs), ("worker", self.workers)):
            for index, process in group.items():
                rss = _rss_mib(process.popen.pid)
                name = f"{kind}{index}"
                if rss is not None:
                    self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss)

    def faults(self, hold: float) -> list[Fault]:
        """The schedule's faults; ``hold`` is how long the lasting ones last (the pause: 8 s)."""
        redis = self.redis

        def kill_worker() -> None:
            self.workers[0].stop(signal.SIGKILL)

        def kill_web() -> None:
            self.webs[1].stop(signal.SIGKILL)

        def kill_redis() -> None:
            redis.stop(kill=True)

        def pause() -> None:
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)

        def resume() -> None:
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGCONT)

        def fill() -> None:
            direct = redis.client()
            used = int(direct.info("memory")["used_memory"])
            direct.config_set("maxmemory-policy", "noeviction")
            direct.config_set("maxmemory", str(used))

        def unfill() -> None:
            redis.client().config_set("maxmemory", "0")

        def slow() -> None:
            self.redis_proxy.delay = 0.002

        def fast() -> None:
            self.redis_proxy.delay = 0.0

        return [
            Fault("SIGKILL a worker (another started)", kill_worker, lambda: self.start_worker(0), 1.0),
            Fault("SIGKILL a web process (restarted)", kill_web, lambda: self.start_web(1), 1.0),
            Fault("SIGKILL Redis (restarted, AOF)", kill_redis, redis.start, 1.0),
            Fault("Redis paused (SIGSTOP)", pause, resume, 8.0),
            Fault("Redis full (maxmemory, noeviction)", fill, unfill, hold),
            Fault("+2 ms each way to Redis", slow, fast, hold),
        ]

    def close(self) -> None:
        for process in [*self.webs.values(), *self.workers.values()]:
            process.stop()
        self.router.close()
        self.redis_proxy.close()
        if self.redis.process is not None:
            self.redis.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(
    seconds: float,
    rate: float,
    *,
    seed: int = 1,
    directory: Path | None = None,
    log: Callable[[str], None] = _say,
) -> Outcome:
    """Run the soak for about ``seconds`` at ``rate`` callbacks per second; return what happened."""
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        cluster = Cluster(directory or Path(scratch))
        try:
            return _drive(cluster, seconds, rate, seed, log)
        finally:
            cluster.close()


def _drive(cluster: Cluster, seconds: float, rate: float, seed: int, log: Callable[[str], None]) -> Outcome:
    begun = time.monotonic()

    def clock() -> float:
        """Seconds into the run."""
        return time.monotonic() - begun

    traffic = plan(seed, max(1, int(rate * seconds / _CALLBACKS_PER_CALL)), start=now_utc(), duplicates=0.05)
    deliveries: tuple[Delivery, ...] = traffic.deliveries[: int(rate * seconds)]
    traffic = Plan(traffic.calls, deliveries)
    tally = TimedTally(clock)
    target = Target(cluster.base_url, Signer(TOKEN), concurrency=256, rate=rate, retries=1)

    async def traffic_main() -> None:
        async with client(256) as http:
            await send(traffic, target, http=http, tally=tally)

    sender = threading.Thread(target=asyncio.run, args=(traffic_main(),), name="soak-traffic")
    sender.start()
    # Faults in the middle 80 % of the run, evenly spaced; quiet at both ends.
    hold = max(3.0, min(30.0, seconds / 20))
    faults = cluster.faults(hold)
    spacing = seconds * 0.8 / len(faults)
    for number, fault in enumerate(faults):
        _sleep_until(clock, seconds * 0.1 + number * spacing, cluster)
        log(f"[{clock():6.1f} s] {fault.name}")
        fault.started = clock()
        fault.inject()
        _sleep_until(clock, fault.started + fault.hold, cluster)
        fault.heal()
        fault.ended = clock()
    while sender.is_alive():
        _sleep_until(clock, clock() + 1, cluster)
    stopped = clock()
    log(f"[{stopped:6.1f} s] traffic sent; reading every call back")
    expected = expected_states(traffic.calls, tally, lambda sid, ev: reduce(sid, ev).to_dict())

    async def verify_main() -> dict[str, str]:
        async with client(32) as http:
            return await read_back(
                expected,
                http=http,
                base_url=cluster.base_url,
                read_token=tokens.issue(SECRET),
                timeout=120,
            )

    wrong = asyncio.run(verify_main())
    return Outcome(
        seconds=clock(),
        tally=tally,
        faults=faults,
        checked_calls=sum(1 for e in expected if e.candidates),
        acknowledged=len(tally.acknowledged),
        wrong=wrong,
        catch_up=clock() - stopped,
        rss_mib=dict(cluster.peak_rss),
    )


def _sleep_until(clock: Callable[[], float], moment: float, cluster: Cluster) -> None:
    while clock() < moment:
        cluster.sample_rss()
        time.sleep(min(0.5, max(0.0, moment - clock())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "100")))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (logs, Redis files)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like an exception, so that the cluster's processes are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    outcome = run(args.seconds, args.rate, seed=args.seed, directory=args.keep)
    _say(outcome.table() + "\n\n" + outcome.summary())
    problems = outcome.problems()
    for problem in problems:
        sys.stderr.write(f"FAILED: {problem}\n")
    if outcome.wrong and args.keep is not None:
        (args.keep / "wrong.txt").write_text(
            "".join(f"{sid} {why}\n" for sid, why in sorted(outcome.wrong.items()))
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
