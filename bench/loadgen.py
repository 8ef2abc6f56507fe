"""An open-loop HTTP load generator for corpus files, and the driver's wrapper around it.

wrk is closed-loop: a slow answer delays the next request, which hides queueing (coordinated
omission). Here requests are *scheduled* at a fixed rate and each latency is measured from the
moment the request was due and queued for a connection (not from when a connection became free),
so a server that falls behind shows it. ``--rate 0`` sends as fast as the
connections allow instead (to pre-fill a queue).

Run as ``python -m bench.loadgen`` (the driver does, pinned to the load core); it prints one JSON
object: counts, statuses, latency percentiles, how late the scheduler ran (so a generator that is
itself the bottleneck shows up) and its own CPU time. With ``--acks FILE`` it also writes, per
answered request, ``CallSid SequenceNumber wall-clock-seconds`` of the answer (for the lag test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import uvloop

from bench.procs import ROOT

_SID = re.compile(rb"(?:^|&)CallSid=(CA[0-9a-f]{32})")
_SEQUENCE = re.compile(rb"(?:^|&)SequenceNumber=(\d+)")


def _requests(corpus: Path, host: str, offset: int, count: int) -> list[tuple[bytes, bytes, bytes]]:
    """(raw HTTP request, CallSid, SequenceNumber) for ``count`` lines from ``offset`` (cycling)."""
    lines = corpus.read_bytes().splitlines()
    out = []
    for index in range(offset, offset + count):
        path, signature, body = lines[index % len(lines)].split(b"\t")
        head = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"X-Twilio-Signature: %s\r\nContent-Length: %d\r\n\r\n"
        ) % (path, host.encode(), signature, len(body))
        sid = _SID.search(body)
        sequence = _SEQUENCE.search(body)
        out.append((head + body, sid.group(1) if sid else b"-", sequence.group(1) if sequence else b"-"))
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; :meth:`send` returns the status of the next answer."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        marker = head.find(b"\r\ncontent-length:")
        if marker >= 0:
            stop = head.find(b"\r\n", marker + 2)
            length = int(head[marker + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def send(self, request: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class _Run:
    """One run: the connections, the schedule, and what was measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.requests = _requests(args.corpus, args.host, args.offset, args.count)
        self.queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.acks: list[tuple[int, float]] = []
        self.behind = 0.0

    async def connection_loop(self, connection: _Connection) -> None:
        """Take the next due request, send it, wait for the answer, record; until cancelled."""
        wall_offset = time.time() - time.perf_counter()
        while True:
            index, queued = await self.queue.get()
            queued = queued or time.perf_counter()  # closed loop: from the send
            try:
                status = await connection.send(self.requests[index][0])
            except ConnectionError:
                return
            now = time.perf_counter()
            self.latencies.append(now - queued)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.acks.append((index, now + wall_offset))
            self.queue.task_done()

    async def schedule(self, start: float) -> None:
        """Queue request ``i`` at ``start + i / rate``; at rate 0 queue them all at once (closed
        loop: each connection sends its next request when the previous one is answered)."""
        rate = self.args.rate
        if rate <= 0:
            for index in range(len(self.requests)):
                self.queue.put_nowait((index, 0.0))
            return
        for index in range(len(self.requests)):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            # Latency counts from here: the timer's own lateness (uvloop wakes up to 1 ms late) is
            # the generator's, reported as max_behind_ms; waiting for a busy connection is not.
            queued = time.perf_counter()
            self.behind = max(self.behind, queued - due)
            self.queue.put_nowait((index, queued))

    def write_acks(self, path: Path) -> None:
        with path.open("w") as out:
            for index, at in self.acks:
                _, sid, sequence = self.requests[index]
                out.write(f"{sid.decode()} {sequence.decode()} {at:.6f}\n")

    async def run(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        connections = []
        for _ in range(self.args.connections):
            _, protocol = await loop.create_connection(_Connection, "127.0.0.1", self.args.port)
            connections.append(protocol)
        tasks = [asyncio.create_task(self.connection_loop(c)) for c in connections]
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        start = time.perf_counter() + (0.01 if self.args.rate > 0 else 0)
        await self.schedule(start)
        sent_by = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout=self.args.drain)
        finished = time.perf_counter()
        for task in tasks:
            task.cancel()
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        if self.args.acks is not None:
            self.write_acks(self.args.acks)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        answered = self.latencies
        return {
            "scheduled": len(self.requests),
            "answered": len(answered),
            "errors": len(self.requests) - len(answered),
            "statuses": self.statuses,
            "seconds": finished - start,
            "send_seconds": sent_by - start,
            "rate": len(answered) / (finished - start),
            "p50_ms": _percentile(answered, 50) * 1000,
            "p90_ms": _percentile(answered, 90) * 1000,
            "p99_ms": _percentile(answered, 99) * 1000,
            "p999_ms": _percentile(answered, 99.9) * 1000,
            "max_behind_ms": self.behind * 1000,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="the Host header (the signed URL's host)")
    parser.add_argument("--rate", type=float, default=0, help="requests per second; 0: closed loop")
    parser.add_argument("--count", type=int, required=True, help="requests to send")
    parser.add_argument("--offset", type=int, default=0, help="first corpus line")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain", type=float, default=10, help="seconds to wait for the last answers")
    parser.add_argument("--acks", type=Path, help="write 'CallSid SequenceNumber time' per answer")
    return parser


def main() -> None:
    args = _parser().parse_args()
    print(json.dumps(uvloop.run(_Run(args).run())))


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load generator run measured (latencies in ms, from each request's scheduled time)."""

    scheduled: int
    answered: int
    errors: int
    statuses: dict[str, int]
    seconds: float
    send_seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_behind_ms: float
    cpu_seconds: float


def run_loadgen(
    port: int,
    corpus: Path,
    *,
    count: int,
    rate: float,
    host: str,
    core: int | None,
    offset: int = 0,
    connections: int = 64,
    acks: Path | None = None,
    drain: float = 10,
) -> LoadResult:
    """Run the generator as a child process (pinned to ``core``) and return what it measured;
    ``drain``: seconds to wait for the last answers once everything is sent."""
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--corpus", str(corpus)]
    argv += ["--host", host, "--rate", str(rate), "--count", str(count), "--offset", str(offset)]
    argv += ["--connections", str(connections), "--drain", str(drain)]
    if acks is not None:
        argv += ["--acks", str(acks)]
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    timeout = (count / rate if rate > 0 else count / 500) + 60 + drain
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.strip()[-2000:]}")
    return LoadResult(**json.loads(done.stdout))


if __name__ == "__main__":
    main()
