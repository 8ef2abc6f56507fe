"""A small asyncio TCP proxy for fault injection: added latency, and a router in front of processes.

:class:`TcpProxy` listens on a port of its own and forwards every connection to one of its
backends, round robin, skipping a backend that refuses the connection (a web process being
restarted), as a platform's router does. ``delay`` (seconds, changeable at any time) holds every
chunk that long in each direction before passing it on, in order: ``delay=0.002`` between the
processes and Redis is a Redis 2 ms away each way, as a managed one is.

It runs its own event loop on a thread so that synchronous tests and harnesses can use it;
:meth:`close` stops it and every connection it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

from tests.redisserver import free_port


class TcpProxy:
    """``127.0.0.1:port`` -> ``backends`` (host, port), with an optional one-way ``delay``."""

    def __init__(self, backends: Sequence[tuple[str, int]], *, delay: float = 0.0) -> None:
        self.backends = list(backends)
        self.delay = delay
        self.port = free_port()
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name=f"tcpproxy:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: OSError | None = None
        for _ in range(len(self.backends)):
            host, port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                return await asyncio.open_connection(host, port)
            except OSError as exc:
                last = exc
        raise last or OSError("no backend")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                upstream_reader, upstream_writer = await self._connect()
            except OSError:
                return
            try:
                await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
            finally:
                upstream_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until EOF or an error; each chunk leaves ``delay`` after it arrived, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.create_task(send())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay, chunk))
                if not chunk:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            sender.cancel()
            writer.close()
        finally:
            sender.cancel()  # no-op once it has finished; else (cancelled, cut) it would wait forever
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await sender

    def drop_connections(self) -> None:
        """Cut every connection now (what a dead backend does to its clients)."""

        def cut() -> None:
            for task in list(self._tasks):
                task.cancel()

        self._loop.call_soon_threadsafe(cut)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
