"""One round trip of commands to the store, whether it is one Redis or a Redis Cluster.

The store's steps each send many commands at once: reads,
``EVALSHA`` of the add, commit and publish scripts. On one Redis that is one pipeline. On a cluster
every command goes to the master owning its key's slot, so :func:`execute` sends one pipeline per
master touched (one round trip each, in turn) and puts the replies back in the callers' order. redis-py's
own cluster pipeline cannot be used: it refuses ``EVALSHA``.

Two things a cluster adds, both handled here so that the store's code does not see them:

* **Slots move.** After a failover (or a resharding) a master answers ``MOVED``, or is gone. The
  slot map is then refreshed and the whole round trip sent again: every command the store sends is
  idempotent (adds keep the preferred event, commits compare a version, publishes skip what is
  published), so a repeat changes nothing.
* **Replication is asynchronous.** A master that dies may take writes its replica never got. So a
  pipeline that writes to a master that has replicas ends with ``WAIT 1``; if no replica confirms
  in time, :class:`ReplicationLagging` is raised, the job fails before RQ marks it done, and its
  retry writes again. An acknowledged callback can therefore not be lost with its job finished
  (README, "Failure modes").

A script missing from a server's cache (a restart, a new master) is loaded and the round trip
retried, as before.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from callstate.connection import StoreClient

#: Milliseconds a master waits for a replica to confirm a pipeline's writes.
WAIT_MS: Final = 2000
#: Round trips tried while the cluster's slots move; a failover takes about the node timeout.
ATTEMPTS: Final = 8
#: Seconds between attempts, doubled each time (0.1 + 0.2 + ... about 25 s in all).
BACKOFF: Final = 0.1

_MOVING: Final = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    RedisConnectionError,
    RedisTimeoutError,
)


#: Master name -> whether it has a replica connected (see _has_replica); forgotten on a refresh.
_REPLICATED: dict[str, bool] = {}


class ReplicationLagging(RedisError):
    """A master's replica did not confirm the writes in time: the job fails and is retried."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command: ``key`` decides where it goes (the slot of a cluster), ``args`` is sent."""

    key: str
    args: tuple[Any, ...]
    writes: bool = False


def execute(client: StoreClient, commands: Sequence[Command], scripts: Sequence[Script] = ()) -> list[Any]:
    """The replies to ``commands``, in order; errors raise (the first one) as redis-py does."""
    if not commands:
        return []
    if isinstance(client, RedisCluster):
        return _on_cluster(client, commands, scripts)
    try:
        return _pipeline(client, commands)
    except NoScriptError:
        for script in scripts:
            client.script_load(script.script)
        return _pipeline(client, commands)


def _pipeline(client: Redis, commands: Sequence[Command], wait: bool = False) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    queue: Callable[..., Any] = pipe.execute_command  # redis-py leaves it untyped
    for command in commands:
        queue(*command.args)
    if wait:
        queue("WAIT", 1, WAIT_MS)
    replies = pipe.execute()
    if wait:
        if int(replies[-1]) < 1:
            raise ReplicationLagging("no replica confirmed the writes in time")
        replies.pop()
    return replies


def _on_cluster(client: RedisCluster, commands: Sequence[Command], scripts: Sequence[Script]) -> list[Any]:
    delay = BACKOFF
    for attempt in range(ATTEMPTS):
        try:
            return _round_trip(client, commands)
        except NoScriptError:
            for script in scripts:
                client.script_load(script.script)  # sent to every master
        except _MOVING:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(delay)
            delay *= 2
            _refresh(client)
    return _round_trip(client, commands)


def _round_trip(client: RedisCluster, commands: Sequence[Command]) -> list[Any]:
    """One pipeline per master, in parallel on the wire; replies put back in order."""
    # Per master: the master and the indexes of its commands.
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for index, command in enumerate(commands):
        nodes = client.nodes_manager.slots_cache.get(key_slot(command.key.encode()))
        if not nodes:
            raise ClusterDownError(f"no node serves the slot of {command.key}")
        groups.setdefault(nodes[0].name, (nodes[0], []))[1].append(index)  # the slot's master first
    replies: list[Any] = [None] * len(commands)
    for node, indexes in groups.values():
        group = [commands[i] for i in indexes]
        wait = any(command.writes for command in group) and _has_replica(client, node)
        for index, reply in zip(indexes, _pipeline(_connection(client, node), group, wait), strict=True):
            replies[index] = reply
    return replies


def _has_replica(client: RedisCluster, master: ClusterNode) -> bool:
    """Whether ``master`` has a replica connected (its ``INFO replication``, asked once per master
    and again after the slot map changed: the slot map may not list replicas)."""
    known = _REPLICATED.get(master.name)
    if known is None:
        info: dict[str, Any] = _connection(client, master).info("replication")
        known = _REPLICATED[master.name] = int(info.get("connected_slaves", 0)) > 0
    return known


def _connection(client: RedisCluster, node: ClusterNode) -> Redis:
    return client.get_redis_connection(node)


def _refresh(client: RedisCluster) -> None:
    """Ask the cluster for its slot map again (after MOVED or a dead master)."""
    _REPLICATED.clear()
    with contextlib.suppress(RedisError):  # the next attempt tries again
        client.nodes_manager.initialize()
