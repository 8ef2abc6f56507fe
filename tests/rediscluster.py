"""A private Redis Cluster for tests: real ``redis-server --cluster-enabled yes`` processes on free
ports, joined by ``redis-cli --cluster create``, stopped after.

Three masters cover the 16,384 slots; with ``replicas=1`` each master gets a replica, which is what
the failover test needs (kill a master, its replica takes over). Every node has its own directory,
AOF on (``appendfsync always`` when asked, as in deploy/redis.conf), a short node timeout so that a
failover takes about a second rather than fifteen, and an explicit cluster bus port (the default,
port + 10000, may not exist for a high ephemeral port).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster as ClusterClient

from tests.redisserver import free_port

#: Milliseconds a node may be unreachable before the others fail it over (Redis' default: 15 s).
NODE_TIMEOUT_MS = 1000


class ClusterNode:
    """One cluster-enabled redis-server."""

    def __init__(self, directory: Path, appendfsync: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.bus_port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if (
                    self.process is not None and self.process.poll() is not None
                ) or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"cluster node {self.port} did not start:\n{log}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the node is gone without a goodbye, as a crashed machine is."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF and exits), SIGKILL if it takes longer than 10 s."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def role(self) -> str:
        return str(self.client().info("replication")["role"])


class RedisClusterServer:
    """``masters`` masters (and ``replicas`` replicas each) forming one cluster."""

    def __init__(
        self, directory: Path, *, masters: int = 3, replicas: int = 0, appendfsync: str = "everysec"
    ):
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not on PATH: run the tests with `make test`")
        self.masters = masters
        self.replicas = replicas
        count = masters * (1 + replicas)
        self.nodes = [ClusterNode(directory / f"node{n}", appendfsync) for n in range(count)]

    @property
    def url(self) -> str:
        """A ``redis://`` URL naming one node: what ``STORE_REDIS_URL`` is set to."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def client(self) -> ClusterClient:
        return ClusterClient(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + 20
        for node in self.nodes:
            node.wait_ready(deadline)
        # redis-cli makes the first `masters` nodes masters and the rest their replicas.
        created = subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        self.wait_healthy(deadline=time.monotonic() + 30)

    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.process is not None]

    def wait_healthy(self, deadline: float) -> None:
        """Until every live node says ``cluster_state:ok`` and knows every live node's slots."""
        while True:
            try:
                states = [node.client().cluster("info")["cluster_state"] for node in self.live_nodes()]
                if all(state == "ok" for state in states) and self._replicas_synced():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy")
            time.sleep(0.05)

    def _replicas_synced(self) -> bool:
        for node in self.live_nodes():
            info = node.client().info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def master_nodes(self) -> list[ClusterNode]:
        return [node for node in self.live_nodes() if node.role() == "master"]

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.master_nodes():
            node.client().flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
