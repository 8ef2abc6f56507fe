"""What other store layouts would cost in Redis memory: the evidence for issue 13's next step.

Run ``PYTHONPATH=. .venv/bin/python -m bench.layouts`` from the repository root (about a minute, its
own redis-server; bench/RESULTS.md, "Memory per call"). It stores about 30,000 realistic callbacks
(:func:`callstate.traffic.make_history`, out of order, 10% redelivered, each with a delivery time)
through the real :class:`workers.store.Store`, then takes 600 final calls with a recording and
writes their data again under alternative layouts, into scratch keys of the same server, measuring
each with ``MEMORY USAGE ... SAMPLES 0`` as the bench measures the real one:

* ``today``: the call hash, the event set and the deliveries hash (schema 2);
* ``state deflated``: the call hash with its ``state`` compressed by raw DEFLATE with a preset
  dictionary of 32 KB of other calls' states (zlib's ``zdict``; readers would need the dictionary);
* ``+ events in the call hash``: the same, the event set's fields moved into the call hash;
* ``deliveries, one field per event``: ``<count> <first>`` per slot instead of two fields.

None of these is the product's layout: they are measured so that a change of the schema is chosen
on figures, not guesses. The indexes and the change stream are measured as they are.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from redis import Redis

from bench.corpus import twilio_histories
from bench.redisstack import BenchRedis
from callstate import keys
from callstate.event import Event
from callstate.traffic import arrival_order
from workers.store import Store

_EVENTS = 30_000
_SAMPLE = 600
_START = 1_764_480_000.0


def _final_with_recording(histories: list[list[Event]]) -> list[str]:
    return [
        str(history[0].call_sid)
        for history in histories
        if any(e.kind == "recording" for e in history)
        and any(e.kind == "call" and e.get("CallDuration") is not None for e in history)
    ]


def _deflater(dictionary: bytes) -> Callable[[bytes], bytes]:
    def deflate(data: bytes) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary)
        return compressor.compress(data) + compressor.flush()

    return deflate


def main() -> None:
    rng = random.Random(1)
    histories = twilio_histories(rng, _EVENTS)
    stream = arrival_order(rng, histories, 500, 0.1)
    stream = [dataclasses.replace(e, received_at=_START + i * 0.0123) for i, e in enumerate(stream)]
    with tempfile.TemporaryDirectory() as directory:
        server = BenchRedis(Path(directory), dict(os.environ), core=None)
        try:
            redis = server.client
            store = Store(redis, 30 * 86_400)
            store.write_schema_version()
            for start in range(0, len(stream), 63):
                store.apply(stream[start : start + 63])
            _measure(redis, histories)
        finally:
            server.child.stop()


def _measure(redis: Redis, histories: list[list[Event]]) -> None:
    finals = _final_with_recording(histories)
    sample = random.Random(0).sample(finals, min(_SAMPLE, len(finals)))
    chosen = set(sample)
    others = [str(h[0].call_sid) for h in histories if h[0].call_sid not in chosen][:500]
    trained = [s for s in (redis.hget(keys.call(sid), "state") for sid in others) if s]
    deflate = _deflater(b"".join(trained)[-32_768:])

    def usage(key: str) -> int:
        return int(redis.memory_usage(key, samples=0) or 0)

    total: Counter[str] = Counter()
    for sid in sample:
        call, events, deliveries = keys.of_record(sid)
        state = redis.hget(call, "state") or b""
        event_set = redis.hgetall(events)
        counted = redis.hgetall(deliveries)
        total["state JSON, bytes"] += len(state)
        total["state deflated, bytes"] += len(deflate(state))
        total["today: call hash"] += usage(call)
        total["today: event set"] += usage(events)
        total["today: deliveries"] += usage(deliveries)
        # A scratch key as long as the real ones, so that the key's own bytes compare.
        scratch = call.replace(keys.PREFIX, "x" * len(keys.PREFIX), 1)
        redis.delete(scratch)
        redis.hset(scratch, mapping={"state": deflate(state), "version": 5})
        total["state deflated: call hash"] += usage(scratch)
        redis.hset(scratch, mapping=event_set)
        total["+ events in the call hash"] += usage(scratch)
        redis.delete(scratch)
        merged = {
            slot: count + b" " + counted.get(slot + b"|first", b"")
            for slot, count in counted.items()
            if not slot.endswith(b"|first")
        }
        if merged:
            redis.hset(scratch, mapping=merged)
        total["deliveries, one field per event"] += usage(scratch)
        redis.delete(scratch)
    shared: Counter[str] = Counter()
    for key in redis.scan_iter(f"{keys.PREFIX}:{{{keys.PREFIX}*", 1000):
        name = key.decode().rsplit("}:", 1)[-1].split(":", 1)[0]
        shared[name] += usage(key.decode())
    calls = len(histories)
    print(f"{len(sample)} final calls with a recording, of {calls:,} calls; bytes per call:")
    for what, value in total.items():
        print(f"  {what:<36}{value / len(sample):>8,.0f}")
    for name, value in sorted(shared.items()):
        print(f"  share of {name:<27}{value / calls:>8,.0f}")
    print(f"  share of every global key{'':<11}{sum(shared.values()) / calls:>8,.0f}")


if __name__ == "__main__":
    main()
