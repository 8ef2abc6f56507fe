"""`callstate watch` as an operator runs it: a real subprocess following a real store."""

from __future__ import annotations

import subprocess
from typing import cast

import redis

from callstate import keys
from callstate.event import parse_callback
from tests.procs import environment, procfile
from tests.redisserver import RedisServer
from tests.twiliosign import call_params, call_sid
from workers.store import Store


def watch(*args: str, url: str) -> subprocess.Popen[str]:
    command = procfile()["release"][:-1]  # python -m callstate
    return subprocess.Popen(
        [*command, "watch", *args],
        env=environment(REDIS_URL=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def entries(client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.changes(0)))


def test_watch_prints_each_change_after_a_position_once(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """From a saved position, the later changes, one line each, repeats dropped, position last."""
    store = Store(redis_client, 86_400)
    store.apply([parse_callback("call", call_params(call_sid(1), "initiated", 0))])
    [(position, _)] = entries(redis_client)
    process = watch("--since", position.decode(), "--count", "2", url=redis_server.url)
    try:
        store.apply([parse_callback("call", call_params(call_sid(1), "ringing", 1))])
        # A repeat, as a crashed worker's retry may leave one: not printed.
        redis_client.xadd(
            keys.changes(0), {"call": call_sid(1), "version": 2, "status": "ringing", "final": 0}
        )
        store.apply([parse_callback("call", call_params(call_sid(2), "busy", 0))])
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    lines = [line.split() for line in out.splitlines()]
    ids = [entry_id.decode() for entry_id, _ in entries(redis_client)]
    assert [words[1:] for words in lines] == [
        [call_sid(1), "v2", "ringing", ids[1]],
        [call_sid(2), "v1", "busy", "final", ids[3]],
    ]
    assert lines[0][0].endswith("Z")


def test_a_malformed_position_is_one_line_and_changes_nothing(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """--since with something that is not a stream ID is refused before Redis is touched."""
    process = watch("--since", "yesterday", url=redis_server.url)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.strip() == "callstate watch: --since takes a stream ID like 1700000000000-0, not 'yesterday'"
    assert redis_client.dbsize() == 0
