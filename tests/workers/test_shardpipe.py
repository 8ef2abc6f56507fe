"""workers.shardpipe: one round trip of store commands, on one Redis or on a real Redis Cluster."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from callstate.connection import StoreClient
from tests.rediscluster import RedisClusterServer
from workers.shardpipe import Command, execute

SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture(params=["redis", "cluster"])
def store(request: pytest.FixtureRequest) -> StoreClient:
    """The same tests on one redis-server and on a 3-master cluster."""
    name = "redis_client" if request.param == "redis" else "cluster_client"
    client: StoreClient = request.getfixturevalue(name)
    return client


def spread_keys(count: int) -> list[str]:
    """Keys of ``count`` different hash tags: on a 3-master cluster they land on every master."""
    return [f"k:{{{n}}}" for n in range(count)]


class TestExecute:
    def test_replies_come_back_in_the_order_of_the_commands(self, store: StoreClient) -> None:
        """Writes and reads over many slots: each reply is its own command's."""
        names = spread_keys(30)
        writes = [Command(name, ("SET", name, f"v{n}"), writes=True) for n, name in enumerate(names)]
        assert execute(store, writes) == [True] * 30
        reads = [Command(name, ("GET", name)) for name in reversed(names)]
        assert execute(store, reads) == [f"v{n}".encode() for n in reversed(range(30))]

    def test_the_commands_reach_every_master_of_a_cluster(
        self, cluster_client: RedisCluster, redis_cluster: RedisClusterServer
    ) -> None:
        """On a cluster the keys are really spread: each master holds some of them."""
        names = spread_keys(30)
        execute(cluster_client, [Command(name, ("SET", name, "x"), writes=True) for name in names])
        sizes = [int(node.client().dbsize()) for node in redis_cluster.master_nodes()]
        assert len(sizes) == 3
        assert all(size > 0 for size in sizes)
        assert sum(sizes) == 30

    def test_a_script_missing_from_the_cache_is_loaded_and_run(self, store: StoreClient) -> None:
        """EVALSHA of a script no server knows (a restart, a new master): loaded, then run once each."""
        script = store.register_script(SCRIPT)
        store.script_flush()
        names = spread_keys(12)
        commands = [Command(name, ("EVALSHA", script.sha, 1, name, 5), writes=True) for name in names]
        assert execute(store, commands, scripts=[script]) == [5] * 12
        assert [store.get(name) for name in names] == [b"5"] * 12

    def test_errors_of_a_command_are_raised(self, store: StoreClient) -> None:
        """A command Redis refuses raises, as a redis-py pipeline does."""
        store.set("s:{1}", "text")
        with pytest.raises(redis.ResponseError):
            execute(store, [Command("s:{1}", ("HGETALL", "s:{1}"))])
