"""Fixtures shared by every test: a real redis-server started for the session, flushed per test,
and a real Redis Cluster for the tests that ask for one.

Also hypothesis's defaults for the whole suite, loaded here so that every ``settings(...)`` a test
module builds inherits them: no per-example deadline and no "too slow" health check, because CI is
a busy 2-core machine where a scheduler pause is not a bug (hypothesis would report it as one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings
from redis.cluster import RedisCluster

from tests.rediscluster import RedisClusterServer
from tests.redisserver import RedisServer

settings.register_profile("callstate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("callstate")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server (AOF on, private port), stopped when the session ends."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an empty database: flushed before and after the test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """A real 3-master Redis Cluster (no replicas) for the session, started on first use."""
    cluster = RedisClusterServer(Path(tmp_path_factory.mktemp("cluster")))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster: RedisClusterServer) -> Iterator[RedisCluster]:
    """A cluster client on an empty cluster: every master flushed before and after the test."""
    redis_cluster.flush()
    client = redis_cluster.client()
    yield client
    redis_cluster.flush()
    client.close()
