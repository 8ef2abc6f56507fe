"""docs/redis-schema.md is the dashboards' contract: read a reconciled call by following it alone."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, cast

import orjson
import redis

from callstate import keys
from callstate.traffic import make_history
from workers.store import Store

DOC = (Path(__file__).resolve().parent.parent / "docs" / "redis-schema.md").read_text()


def documented_keys() -> set[str]:
    """Every key name the document defines (backticked, starting with the prefix)."""
    return set(re.findall(r"`(callstate:[^` ]+)`", DOC))


def doc_key(template: str, **values: str) -> str:
    """A documented key with its <placeholders> filled in."""
    [key] = [k for k in documented_keys() if k.startswith(template)]
    return re.sub(r"<(\w+)>", lambda m: values[m.group(1)], key)


def test_every_key_the_code_writes_is_documented_and_vice_versa() -> None:
    """The key names of callstate.keys and of the document are the same set."""
    in_code = {
        keys.SCHEMA, keys.RECENT, keys.ACTIVE, keys.FINAL, keys.PUBLISHED, keys.CHANGES, keys.SWEPT,
        keys.SWEEP_LOCK, keys.METRICS,
        keys.call("<record>"), keys.events("<record>"), keys.deliveries("<record>"),
        keys.orphan_recording("<RecordingSid>"), keys.by_status("<status>"),
    }  # fmt: skip
    assert documented_keys() == in_code
    assert f"returns `{keys.SCHEMA_VERSION}`" in DOC


def test_a_reconciled_call_read_by_following_the_document(redis_client: redis.Redis) -> None:
    """Schema version, state JSON, version, event set, indexes and stream, as documented."""
    sid = "CA" + "d0c" * 10 + "00"
    history = make_history(random.Random(7), sid)
    store = Store(redis_client, 30 * 86_400)
    store.write_schema_version()
    for event in history:  # one change at a time, as callbacks arrive
        store.apply([event])

    assert redis_client.get(doc_key("callstate:{callstate}:schema")) == b"2"

    call = doc_key("callstate:call:", record=sid)
    state: dict[str, Any] = orjson.loads(cast(bytes, redis_client.hget(call, "state")))
    documented_fields = re.search(r"```json\n(.*?)```", DOC, re.S)
    assert documented_fields is not None
    for field in re.findall(r'"(\w+)":', documented_fields.group(1).split('"events"')[0]):
        assert field in state
    assert state["sid"] == sid
    documented_statuses = re.search(r"`status` is one of `([a-z -]+)`", DOC)
    assert documented_statuses is not None
    assert state["status"] is None or state["status"] in documented_statuses.group(1).split()
    version = int(cast(bytes, redis_client.hget(call, "version")))
    assert version >= 1
    assert 0 < redis_client.ttl(call) <= 30 * 86_400

    events = cast(dict[bytes, bytes], redis_client.hgetall(doc_key("callstate:events:", record=sid)))
    assert len(events) == len(set(history))
    documented_width = re.search(r"(\d+) ASCII characters of preference", DOC)
    assert documented_width is not None
    width = int(documented_width.group(1))
    for field, value in events.items():
        assert re.fullmatch(rb"[cr]:(twilio|rest):[0-9a-f]{16}", field)
        assert re.fullmatch(rb"[0-9a-f]+", value[:width])
        decoded = orjson.loads(value[width:])
        assert set(decoded) == {"kind", "source", "params"}

    assert redis_client.zscore(doc_key("callstate:{callstate}:recent"), sid) is not None
    status_index = doc_key("callstate:{callstate}:status:", status=state["status"] or "none")
    assert redis_client.zscore(status_index, sid) is not None
    active = redis_client.zscore(doc_key("callstate:{callstate}:active"), sid)
    assert (active is None) == state["final"]
    final = redis_client.zscore(doc_key("callstate:{callstate}:final"), sid)
    assert (final is not None) == state["final"]
    assert redis_client.hget(doc_key("callstate:{callstate}:published"), sid) == (
        f"{version}:{state['status'] or 'none'}".encode()
    )

    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(doc_key("callstate:{callstate}:changes"))
    )
    mine = [fields for _, fields in entries if fields[b"call"] == sid.encode()]
    assert len(mine) == version
    assert set(mine[-1]) == {b"call", b"version", b"status", b"final"}
    assert mine[-1][b"version"] == str(version).encode()
    assert mine[-1][b"final"] == (b"1" if state["final"] else b"0")
