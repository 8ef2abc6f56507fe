"""What open live pages cost a web process: ``python -m bench.pages`` (see bench/RESULTS.md).

The callback path has no code of the page (callbacks are answered before Starlette's router, and
nothing of the page runs per callback); what open pages can take from callbacks is the web
process's CPU. So this measures that CPU directly, which is steadier on a busy machine than a
difference of two throughputs: a real ``callstate web`` (pinned to one core) over a store of
2,000 calls, while the change stream moves at a fixed rate, with no page open and then with
``pages`` pages. A page is what the browser does: one Server-Sent Events stream read to the end,
and ``GET /dashboard/data`` (50 rows and the counts) once a second. The stream is written
directly, as the workers' publish script writes it, so no worker competes for the CPU.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import redis

from bench import designs
from bench.procs import stop_all
from bench.receiver import Cores, Server, running
from bench.redisstack import BenchRedis
from callstate import keys, tokens
from callstate.event import parse_callback
from workers.store import Store

SECRET_KEY = "bench-pages-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway key for a local run
CALLS = 2_000


@dataclass(frozen=True, slots=True)
class PagesResult:
    """``pages`` open while the stream moved at ``rate`` changes/s: the web process's CPU."""

    pages: int
    rate: float
    cpu_share: float
    events_received: int


class Page:
    """One open page: an event stream read in a thread, and a data read every second."""

    def __init__(self, base: str, token: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)
        self.client.get("/dashboard", params={"token": token})  # sets the cookie
        self.stop = threading.Event()
        self.events = 0
        self.threads = [threading.Thread(target=self._stream), threading.Thread(target=self._poll)]
        for thread in self.threads:
            thread.start()

    def _stream(self) -> None:
        try:
            with self.client.stream("GET", "/dashboard/events") as answer:
                for line in answer.iter_lines():
                    if line.startswith("id: "):
                        self.events += 1
                    if self.stop.is_set():
                        return
        except httpx.HTTPError:
            return

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.client.get("/dashboard/data")
            except httpx.HTTPError:
                return  # closed meanwhile

    def close(self) -> None:
        self.stop.set()
        self.client.close()
        for thread in self.threads:
            thread.join(timeout=15)


@contextmanager
def pages_open(server: Server, count: int) -> Iterator[list[Page]]:
    token = tokens.issue(SECRET_KEY, ttl=3600)
    pages = [Page(f"http://127.0.0.1:{server.port}", token) for _ in range(count)]
    try:
        yield pages
    finally:
        for page in pages:
            page.close()


@contextmanager
def stream_moving(client: redis.Redis, rate: float) -> Iterator[None]:
    """XADD ``rate`` entries a second (in 20 pipelines a second) until the block ends."""
    stop = threading.Event()
    sids = [f"CA{n:032x}" for n in range(CALLS)]
    versions = dict.fromkeys(sids, 1)

    def write() -> None:
        rng = random.Random(5)
        per_tick = max(1, round(rate / 20))
        next_tick = time.monotonic()
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            for _ in range(per_tick):
                sid = rng.choice(sids)
                versions[sid] += 1
                pipe.xadd(
                    keys.changes(0), {"call": sid, "version": versions[sid], "status": "ringing", "final": 0}
                )
            pipe.execute()
            next_tick += 0.05
            stop.wait(max(0.0, next_tick - time.monotonic()))

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fill(client: redis.Redis) -> None:
    """CALLS ringing calls, so that a page's data read has 50 real rows to read."""
    store = Store(client, 86_400)
    stamp = "Mon, 30 Nov 2026 12:00:00 +0000"
    for start in range(0, CALLS, 500):
        store.apply(
            [
                parse_callback(
                    "call",
                    [
                        ("AccountSid", "AC" + "a" * 32),
                        ("CallSid", f"CA{n:032x}"),
                        ("CallStatus", "ringing"),
                        ("Direction", "outbound-api"),
                        ("From", "+15005550001"),
                        ("To", "+15005550006"),
                        ("SequenceNumber", "0"),
                        ("Timestamp", stamp),
                    ],
                )
                for n in range(start, start + 500)
            ]
        )


def measure(
    bench_redis: BenchRedis, directory: Path, *, pages: int, rates: list[float], seconds: float, cores: Cores
) -> list[PagesResult]:
    """For each rate: the web process's CPU share with no page, then with ``pages`` pages."""
    env = designs.environment(bench_redis.url, SECRET_KEY=SECRET_KEY)
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: list[PagesResult] = []
    with running(designs.CALLSTATE, bench_redis, env, logs, cores) as server:
        client = redis.Redis.from_url(bench_redis.url)
        fill(client)
        for rate in rates:
            for count in (0, pages):
                with stream_moving(client, rate), pages_open(server, count) as open_pages:
                    time.sleep(1)  # pages connected, first data reads done
                    cpu, started = server.child.cpu(), time.monotonic()
                    time.sleep(seconds)
                    share = (server.child.cpu() - cpu) / (time.monotonic() - started)
                    received = sum(page.events for page in open_pages)
                results.append(PagesResult(count, rate, share, received))
        client.close()
    return results


def table(results: list[PagesResult], cpu_per_callback_us: float) -> str:
    lines = [
        "| stream, changes/s | live pages open | web CPU, share of a core "
        "| callbacks/s of capacity it takes | SSE events received |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.rate:,.0f} | {r.pages} | {r.cpu_share:.1%} | "
            f"{r.cpu_share * 1e6 / cpu_per_callback_us:,.0f} | {r.events_received:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--rates", default="300,1000,3000", help="changes/s of the stream, comma-separated")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--cpu-per-callback-us", type=float, default=60, help="to express CPU as callbacks (README: 60)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bench_redis = BenchRedis(args.out / "redis-pages", {}, core=1)
    try:
        started = time.monotonic()
        rates = [float(rate) for rate in args.rates.split(",")]
        results = measure(
            bench_redis, args.out, pages=args.pages, rates=rates, seconds=args.seconds, cores=Cores(0, 1)
        )
        print(table(results, args.cpu_per_callback_us))
        print(f"({time.monotonic() - started:.0f} s)")
    finally:
        bench_redis.stop()
        stop_all()


if __name__ == "__main__":
    main()
