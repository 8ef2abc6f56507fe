"""Where a final call's bytes go in the store (schema 3): the evidence behind issue 13's figures.

Run ``PYTHONPATH=. .venv/bin/python -m bench.layouts`` from the repository root (about a minute, its
own redis-server; bench/RESULTS.md, "Memory per call"). It stores about 30,000 realistic callbacks
(:func:`callstate.traffic.make_history`, out of order, 10% redelivered, each with a delivery time)
through the real :class:`workers.store.Store`, then takes 600 final calls with a recording and
reports, per call, ``MEMORY USAGE ... SAMPLES 0`` of the call hash (as the bench measures it), the
sizes of its compressed ``state`` and ``events`` against their uncompressed bytes, what the call
hash would weigh with both stored uncompressed (scratch keys as long as the real ones), and each
global key's share.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import cast

from redis import Redis

from bench.corpus import twilio_histories
from bench.redisstack import BenchRedis
from callstate import compression, eventset, keys
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

    def usage(key: str) -> int:
        return int(redis.memory_usage(key, samples=0) or 0)

    total: Counter[str] = Counter()
    for sid in sample:
        [call] = keys.of_record(sid)
        stored = cast(dict[bytes, bytes], redis.hgetall(call))
        state, events = compression.state_json(stored[b"state"]), eventset.load(stored[b"events"])
        total["call hash (MEMORY USAGE)"] += usage(call)
        total["state, compressed"] += len(stored[b"state"])
        total["state, JSON"] += len(state)
        total["events, compressed"] += len(stored[b"events"])
        total["events, uncompressed"] += len(eventset.serialize(events))
        total["event count"] += len(events)
        # A scratch key as long as the real one, so that the key's own bytes compare.
        scratch = call.replace(keys.PREFIX, "x" * len(keys.PREFIX), 1)
        redis.hset(scratch, mapping={**stored, b"state": state, b"events": eventset.serialize(events)})
        total["call hash, both uncompressed"] += usage(scratch)
        redis.delete(scratch)
    shared: Counter[str] = Counter()
    for key in redis.scan_iter(f"{keys.PREFIX}:{{{keys.PREFIX}*", 1000):
        name = key.decode().rsplit("}:", 1)[-1].split(":", 1)[0]
        shared[name] += usage(key.decode())
    calls = len(histories)
    print(f"{len(sample)} final calls with a recording, of {calls:,} calls; per call:")
    for what, value in total.items():
        print(f"  {what:<36}{value / len(sample):>8,.1f}")
    for name, value in sorted(shared.items()):
        print(f"  share of {name:<27}{value / calls:>8,.0f}")
    global_share = sum(shared.values()) / calls
    print(f"  share of every global key{'':<11}{global_share:>8,.0f}")
    per_call = total["call hash (MEMORY USAGE)"] / len(sample) + global_share
    print(f"  total per final call{'':<16}{per_call:>8,.0f}")


if __name__ == "__main__":
    main()
