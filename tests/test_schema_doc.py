"""docs/redis-schema.md is the dashboards' contract: read a reconciled call by following it alone."""

from __future__ import annotations

import dataclasses
import random
import re
import zlib
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis
import zstandard

from callstate import keys
from callstate.connection import StoreClient
from callstate.packing import unpack
from callstate.traffic import make_history
from workers import schema2
from workers.store import Store

DOC = (Path(__file__).resolve().parent.parent / "docs" / "redis-schema.md").read_text()


def documented_keys() -> set[str]:
    """Every key name the document defines (backticked, starting with the prefix)."""
    return set(re.findall(r"`(callstate:[^` ]+)`", DOC))


def doc_key(template: str, **values: str) -> str:
    """A documented key with its <placeholders> filled in."""
    [key] = [k for k in documented_keys() if k.startswith(template)]
    return re.sub(r"<(\w+)>", lambda m: values[m.group(1)], key)


def inflate(client: StoreClient, frame: bytes) -> bytes:
    """A stored zstd frame decompressed with the dictionary its header names, read from Redis
    ("Compression"), with nothing of callstate's code."""
    dictionary_id = zstandard.get_frame_parameters(frame).dict_id
    raw = cast(bytes, client.get(doc_key("callstate:{callstate}:dictionary:", id=str(dictionary_id))))
    return zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(raw)).decompress(frame)


def parse_event_set(data: bytes) -> dict[bytes, tuple[bytes, int, int]]:
    """slot -> (stored event, deliveries, first + 1), read as "The event set" describes it."""
    at = 0

    def varint() -> int:
        nonlocal at
        number, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return number

    def text() -> bytes:
        nonlocal at
        size = varint()
        at += size
        return data[at - size : at]

    assert varint() == 1  # "the format, `1`"
    entries = {}
    for _ in range(varint()):
        slot, value = text(), text()
        entries[slot] = (value, varint(), varint())
    assert at == len(data)
    return entries


def bucket_template(key: str) -> str:
    """A key of bucket 7 with its bucket number written as the document writes it."""
    return key.replace("{callstate:7}", "{callstate:<bucket>}")


@pytest.fixture(params=["redis", "cluster"])
def store_client(request: pytest.FixtureRequest) -> StoreClient:
    """The document followed on one redis-server, and on a 3-master Redis Cluster."""
    client: StoreClient = request.getfixturevalue(
        "redis_client" if request.param == "redis" else "cluster_client"
    )
    return client


def test_every_key_the_code_writes_is_documented_and_vice_versa() -> None:
    """The key names of callstate.keys and of the document are the same set."""
    in_code = {
        keys.SCHEMA, keys.BUCKETS, keys.SWEPT, keys.SWEEP_LOCK, keys.METRICS,
        *(bucket_template(index(7)) for index in (keys.recent, keys.active, keys.final, keys.published)),
        bucket_template(keys.changes(7)),
        bucket_template(keys.by_status("<status>", 7)),
        keys.call("<record>"), keys.orphan_recording("<RecordingSid>"),
        keys.dictionary("<id>"),  # type: ignore[arg-type]
        # Read and deleted only, when a record is upgraded from schema 2 ("Upgrading").
        schema2.old_events("<record>"), schema2.old_deliveries("<record>"),
    }  # fmt: skip
    assert documented_keys() == in_code
    assert f"returns `{keys.SCHEMA_VERSION}`" in DOC


def test_a_reconciled_call_read_by_following_the_document(store_client: StoreClient) -> None:
    """Schema version, bucket count, state JSON, version, event set, indexes and stream, as
    documented, on one Redis and on a cluster."""
    redis_client = store_client
    sid = "CA" + "d0c" * 10 + "00"
    history = make_history(random.Random(7), sid)
    # Callbacks carry the time the web process answered them; the sweep's REST answers none.
    received = {e: 1_790_000_000.25 + n for n, e in enumerate(history) if e.source == "twilio"}
    history = [dataclasses.replace(e, received_at=received.get(e)) for e in history]
    store = Store(redis_client, 30 * 86_400)
    store.write_schema_version()
    for event in history:  # one change at a time, as callbacks arrive
        store.apply([event])

    assert redis_client.get(doc_key("callstate:{callstate}:schema")) == b"3"
    buckets = int(cast(bytes, redis_client.get(doc_key("callstate:{callstate}:buckets"))))
    documented_counts = re.search(r"`(\d+)` on a plain Redis, `(\d+)` on a Redis Cluster", DOC)
    assert documented_counts is not None
    on_cluster = not isinstance(redis_client, redis.Redis)
    assert buckets == int(documented_counts.group(2 if on_cluster else 1))
    bucket = str(zlib.crc32(sid.encode()) % buckets)  # "crc32(record) mod buckets"

    call = doc_key("callstate:call:", record=sid)
    state: dict[str, Any] = orjson.loads(inflate(redis_client, cast(bytes, redis_client.hget(call, "state"))))
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

    events = parse_event_set(inflate(redis_client, cast(bytes, redis_client.hget(call, "events"))))
    assert len(events) == len(set(history))
    documented_width = re.search(r"(\d+) bytes of preference, then the event packed", DOC)
    assert documented_width is not None
    width = int(documented_width.group(1))
    assert {unpack(value[width:]) for value, _, _ in events.values()} == set(history)
    assert list(events) == sorted(events)  # "in slot order"
    for slot, (value, deliveries, first) in events.items():
        assert re.fullmatch(rb"[cr]:(twilio|rest):[0-9a-f]{16}", slot)
        assert value[width] == 1  # "the format (`1`)"
        assert deliveries == 1  # each callback applied once
        [event] = [e for e in history if e.slot().encode() == slot]
        # "Unix milliseconds + 1 ... `0` for events that came from no request: source `rest`"
        assert first == (0 if event.received_at is None else round(event.received_at * 1000) + 1)
        assert (first == 0) == (event.source == "rest")

    assert (
        redis_client.zscore(doc_key("callstate:{callstate:<bucket>}:recent", bucket=bucket), sid) is not None
    )
    status_index = doc_key(
        "callstate:{callstate:<bucket>}:status:", bucket=bucket, status=state["status"] or "none"
    )
    assert redis_client.zscore(status_index, sid) is not None
    active = redis_client.zscore(doc_key("callstate:{callstate:<bucket>}:active", bucket=bucket), sid)
    assert (active is None) == state["final"]
    final = redis_client.zscore(doc_key("callstate:{callstate:<bucket>}:final", bucket=bucket), sid)
    assert (final is not None) == state["final"]
    published = cast(
        bytes, redis_client.hget(doc_key("callstate:{callstate:<bucket>}:published", bucket=bucket), sid)
    )
    assert published.rsplit(b":", 1)[0] == f"{version}:{state['status'] or 'none'}".encode()
    assert published.rsplit(b":", 1)[1].isdigit()

    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        redis_client.xrange(doc_key("callstate:{callstate:<bucket>}:changes", bucket=bucket)),
    )
    mine = [fields for _, fields in entries if fields[b"call"] == sid.encode()]
    assert len(mine) == version
    assert set(mine[-1]) == {b"call", b"version", b"status", b"final"}
    assert mine[-1][b"version"] == str(version).encode()
    assert mine[-1][b"final"] == (b"1" if state["final"] else b"0")
