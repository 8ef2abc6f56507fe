"""The Redis connection: one way to open it, for every process and every thread.

The web process, the workers (and the RQ scheduler they fork, which copies the pool's options), the
sweep thread and every ``callstate`` command connect through :func:`connect`, so ``REDIS_URL`` and
the TLS settings mean the same everywhere (README, "Redis over TLS").

TLS. A ``rediss://`` URL is verified by default: the certificate chain against the system's CAs (or
``REDIS_TLS_CA_FILE``) and the host name. Heroku Key-Value Store serves self-signed certificates on a
``REDIS_URL`` the platform sets and the app cannot edit, so verification is relaxed by a separate
setting, ``REDIS_TLS_VERIFY=none``, which app.json declares. A failed verification is turned into
one line naming both settings by :func:`describe_error`.

The store. ``STORE_REDIS_URL`` (by default ``REDIS_URL``) is where the documented keys of
docs/redis-schema.md live; it may name any node of a Redis Cluster, which is detected rather than
configured (docs/contracts.md, "Where the store lives"): :func:`connect_store` asks the node
``INFO cluster`` and gives a cluster node a cluster client, which routes each command by its key's
slot. RQ does not support Cluster, so the queue (``REDIS_URL``) never is one.

Connecting never waits longer than ``redis_timeout`` (Redis down is noticed quickly); how long a
command may take depends on the caller, so it is a parameter.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, Final, TypeAlias, cast
from urllib.parse import urlsplit

from redis import BlockingConnectionPool, Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from callstate.buckets import parse_count
from callstate.keys import BUCKETS
from callstate.settings import Settings

#: Every connection announces its role (``CLIENT SETNAME``), so that ``CLIENT LIST`` shows who
#: holds what (README, "Connection budget"); RQ renames one worker connection to the worker's name.
NAME_PREFIX: Final = "callstate-"

_VERIFY_FAILED: Final = "CERTIFICATE_VERIFY_FAILED"

#: A client of the store: a plain Redis, or a Redis Cluster when ``STORE_REDIS_URL`` names one.
StoreClient: TypeAlias = Redis | RedisCluster


def tls_options(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for ``settings`` (empty for a plain ``redis://`` URL).

    ``REDIS_TLS_VERIFY=none`` accepts any certificate (no chain, no host name check): encryption
    without authentication of the server, what a self-signed certificate allows. Otherwise the chain
    and host name are checked, against ``REDIS_TLS_CA_FILE`` when it is set.
    """
    if urlsplit(url or settings.redis_url).scheme != "rediss":
        return {}
    if settings.redis_tls_verify == "none":
        return {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    return options


def connect(
    settings: Settings, *, command_timeout: float | None, role: str, max_connections: int | None = None
) -> Redis:
    """A client for ``REDIS_URL``; its connections are named ``callstate-<role>``.

    ``command_timeout`` bounds each command: the web process uses ``redis_timeout`` (a callback
    gets 503 rather than hanging); the workers pass ``None`` because RQ's blocking dequeue sets its
    own socket timeout. Connections are opened lazily, on first use, by redis-py's pool.

    ``max_connections`` caps the pool for a client shared by threads (the web process's thread
    pool would otherwise open one connection per concurrent request, against a plan's connection
    limit): a thread then waits up to ``redis_timeout`` for a free connection, and a request that
    cannot get one fails like any Redis error (503). ``None``: a pool without a cap, for clients
    used by one thread at a time.
    """
    options = _options(settings, settings.redis_url, command_timeout, role)
    if max_connections is None:
        return Redis.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=settings.redis_timeout, **options
    )
    return Redis(connection_pool=pool)


def connect_store(
    settings: Settings, *, command_timeout: float | None, role: str, queue: Redis | None = None
) -> StoreClient:
    """A client for the store: a :class:`RedisCluster` if ``STORE_REDIS_URL`` names a cluster node.

    Without ``STORE_REDIS_URL`` the store is the queue's Redis: ``queue`` is returned when given
    (one pool, no I/O), else a new client for ``REDIS_URL``. With it, the node is asked whether it
    is a cluster member, so this raises :class:`redis.RedisError` when it cannot be reached (the
    worker's loop retries with a backoff; the web process asks again on the next read).
    """
    url = settings.store_redis_url
    if url is None:
        return queue if queue is not None else connect(settings, command_timeout=command_timeout, role=role)
    options = _options(settings, url, command_timeout, role)
    probe = Redis.from_url(url, **options)
    try:
        clustered = is_cluster_node(probe)
    finally:
        probe.close()
    if clustered:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


class StoreHandle:
    """The store's client for a long-lived process, connected on first use and then kept.

    ``STORE_REDIS_URL`` may be down when a web process starts; the process must start anyway (its
    callbacks go to ``REDIS_URL``), and its reads connect when the store answers. Also knows the
    store's bucket count (callstate.buckets), read once the workers have written it. Thread-safe.
    """

    def __init__(self, settings: Settings, *, command_timeout: float | None, role: str, queue: Redis) -> None:
        self._settings = settings
        self._timeout = command_timeout
        self._role = role
        self._queue = queue
        self._client: StoreClient | None = None if settings.store_redis_url else queue
        self._buckets: int | None = None
        self._lock = threading.Lock()

    def client(self) -> StoreClient:
        """The store's client; raises :class:`redis.RedisError` while the store cannot be reached."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = connect_store(
                        self._settings, command_timeout=self._timeout, role=self._role, queue=self._queue
                    )
        return self._client

    def buckets(self) -> int:
        """The store's bucket count: 1 until a worker has written one."""
        if self._buckets is not None:
            return self._buckets
        raw = cast(bytes | None, self.client().get(BUCKETS))
        if raw is None:
            return 1
        self._buckets = parse_count(raw)
        return self._buckets

    def close(self) -> None:
        if self._client is not None and self._client is not self._queue:
            self._client.close()


def is_cluster_node(client: Redis) -> bool:
    """Whether the server ``client`` talks to runs with ``cluster-enabled yes``."""
    info: dict[str, Any] = client.info("cluster")
    return bool(info.get("cluster_enabled"))


def _options(settings: Settings, url: str, command_timeout: float | None, role: str) -> dict[str, Any]:
    return {
        "socket_timeout": command_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "client_name": NAME_PREFIX + role,
        **tls_options(settings, url),
    }


def is_verify_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failed TLS certificate verification."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or _VERIFY_FAILED in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe_error(exc: RedisError) -> str:
    """One line for an operator: what went wrong talking to Redis, and which setting fixes a TLS
    verification failure. Never holds the password of ``REDIS_URL`` (redis-py's messages name only
    host and port)."""
    if is_verify_failure(exc):
        return (
            f"Redis TLS certificate not trusted ({_verify_detail(exc)}): set REDIS_TLS_CA_FILE to the "
            "CA certificate that signed it, or REDIS_TLS_VERIFY=none for a provider with self-signed "
            "certificates (Heroku Key-Value Store; app.json sets it)"
        )
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _verify_detail(exc: BaseException) -> str:
    """The certificate problem as OpenSSL states it, e.g. ``self-signed certificate``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) and seen.verify_message:
            return str(seen.verify_message)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(exc).split())
    detail = text.partition("certificate verify failed:")[2].partition("(_ssl.c")[0].strip()
    return detail or _VERIFY_FAILED
