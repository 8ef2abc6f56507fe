"""callstate.connection: the store's Redis is detected as a plain Redis or a cluster node."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from callstate.connection import connect, connect_store
from callstate.settings import Settings
from tests.rediscluster import RedisClusterServer
from tests.redisserver import RedisServer, free_port


class TestConnectStore:
    def test_without_store_url_the_store_is_the_queue_client(self, redis_server: RedisServer) -> None:
        """No STORE_REDIS_URL: the queue's own client is returned (one pool, no probe)."""
        settings = Settings(redis_url=redis_server.url)
        queue = connect(settings, command_timeout=1, role="test")
        assert connect_store(settings, command_timeout=1, role="test", queue=queue) is queue

    def test_a_plain_redis_gets_a_plain_client(self, redis_server: RedisServer) -> None:
        """STORE_REDIS_URL naming a Redis without cluster mode: a plain client on that server."""
        settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", store_redis_url=redis_server.url)
        store = connect_store(settings, command_timeout=1, role="test")
        assert type(store) is redis.Redis
        assert store.connection_pool.connection_kwargs["port"] == redis_server.port

    def test_a_cluster_node_gets_a_cluster_client(self, redis_cluster: RedisClusterServer) -> None:
        """STORE_REDIS_URL naming one node of a cluster: a cluster client that reaches every slot."""
        settings = Settings(store_redis_url=redis_cluster.url)
        store = connect_store(settings, command_timeout=5, role="test")
        assert isinstance(store, RedisCluster)
        # Three keys in slots owned by three different masters, written and read through one client.
        names: dict[str, str] = {}
        for n in range(64):
            name = f"probe:{{{n}}}"
            names[store.nodes_manager.get_node_from_slot(key_slot(name.encode())).name] = name
        assert len(names) == 3
        for name in names.values():
            store.set(name, name)
        assert [store.get(name) for name in names.values()] == [name.encode() for name in names.values()]
        store.delete(*names.values())
        store.close()

    def test_an_unreachable_store_raises_a_redis_error(self) -> None:
        """Nothing listens at STORE_REDIS_URL: a ConnectionError, for the caller's retry loop."""
        settings = Settings(store_redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
        with pytest.raises(redis.ConnectionError):
            connect_store(settings, command_timeout=0.5, role="test")
