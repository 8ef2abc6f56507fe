"""The Redis connection: one way to open it, for every process.

Connecting never waits longer than ``redis_timeout`` (Redis down is noticed quickly); how long a
command may take depends on the caller, so it is a parameter.
"""

from __future__ import annotations

from redis import Redis

from callstate.settings import Settings


def connect(settings: Settings, *, command_timeout: float | None) -> Redis:
    """A client for ``REDIS_URL``.

    ``command_timeout`` bounds each command: the web process uses ``redis_timeout`` (a callback
    gets 503 rather than hanging); the workers pass ``None`` because RQ's blocking dequeue sets its
    own socket timeout.
    """
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=command_timeout,
        socket_connect_timeout=settings.redis_timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )
