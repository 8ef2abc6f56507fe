"""A private redis-server for tests: a free port, its own directory, AOF on, stopped after.

Tests never touch a Redis they did not start. Fault tests stop and restart the same server (same
port, same directory, so the AOF is replayed) through :meth:`RedisServer.stop` and :meth:`start`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.tlscerts import ServerCert


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; ``url`` points at database 0.

    With ``tls`` it listens for TLS only (``rediss://``), with that certificate, as managed Redis
    services do; with ``password`` it wants AUTH (``requirepass``), and ``url`` carries it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendfsync: str = "everysec",
        tls: ServerCert | None = None,
        password: str | None = None,
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH: run the tests with `make test`")
        self.directory = directory
        self.port = free_port()
        self.appendfsync = appendfsync
        self.tls = tls
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client of the test itself (it trusts the server's certificate authority)."""
        tls = {} if self.tls is None else {"ssl_ca_certs": str(self.tls.ca), "ssl_check_hostname": False}
        return redis.Redis.from_url(self.url, socket_timeout=5, client_name="test", **tls)

    def _listen(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        password = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [
                "redis-server",
                *self._listen(),
                *password,
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30  # generous: a loaded machine, or an AOF to replay
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SHUTDOWN (AOF flushed), or SIGKILL with ``kill``."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            # SHUTDOWN closes the connection before it answers.
            with contextlib.suppress(redis.ConnectionError):
                self.client().shutdown(nosave=True)
        self.process.wait(timeout=10)
        self.process = None
