"""The bench's private redis-server and what the bench reads from it: command counts and memory.

It runs ``deploy/redis.conf`` (AOF with ``appendfsync always``, no eviction) on a free port in a
temporary directory, pinned to the load generator's core, with two changes so that runs compare:
no RDB snapshots and no automatic AOF rewrites, whose background fork would land inside one
design's run and not another's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import redis

from bench.procs import ROOT, Child, free_port, wait_until

CONFIG: Final = ROOT / "deploy" / "redis.conf"
#: Commands the bench itself sends around a measurement; never counted.
_OWN_COMMANDS: Final = frozenset({"config|resetstat", "config|set", "config|get", "info", "ping"})


class BenchRedis:
    """One redis-server; :attr:`url` points at database 0."""

    def __init__(self, directory: Path, env: dict[str, str], core: int | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            "redis-server",
            str(CONFIG),
            "--port",
            str(self.port),
            "--dir",
            str(directory),
            "--save",
            "",
            "--auto-aof-rewrite-percentage",
            "0",
            "--daemonize",
            "no",
        ]
        self.child = Child("redis", argv, env=env, log_dir=directory, core=core)
        self.client = redis.Redis.from_url(self.url, socket_timeout=30)
        wait_until(self._ping, 10, "redis-server")

    def _ping(self) -> bool:
        if not self.child.alive():
            raise RuntimeError(f"redis-server exited:\n{self.child.output()[-2000:]}")
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def version(self) -> str:
        info = self.client.info("server")
        return str(info["redis_version"])

    def cpu(self) -> float:
        return self.child.cpu()

    def appendfsync(self, mode: str) -> None:
        """Switch fsync policy at run time (``always`` or ``everysec``)."""
        self.client.config_set("appendfsync", mode)

    def flush(self) -> None:
        """Empty the database (and make the AOF small again)."""
        self.client.flushall()
        self.client.bgrewriteaof()
        wait_until(
            lambda: int(self.client.info("persistence")["aof_rewrite_in_progress"]) == 0,
            30,
            "the AOF rewrite",
        )

    def reset_stats(self) -> None:
        self.client.config_resetstat()

    def command_calls(self) -> dict[str, int]:
        """Calls per command since :meth:`reset_stats`, the bench's own commands left out (commands
        run by Lua scripts are counted, as Redis counts them)."""
        stats = self.client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
        return {name: count for name, count in calls.items() if name not in _OWN_COMMANDS}

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def memory_usage(self, keys: list[str]) -> int:
        """Bytes of ``keys`` by ``MEMORY USAGE ... SAMPLES 0`` (every element counted)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return sum(int(size or 0) for size in pipe.execute())

    def stop(self) -> None:
        self.client.close()
        self.child.stop()
