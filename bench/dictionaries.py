"""Train the zstd dictionaries of callstate.compression from the simulator's traffic.

Run ``PYTHONPATH=. .venv/bin/python -m bench.dictionaries`` from the repository root: it makes
8,000 calls with :func:`callstate.traffic.make_history` (seeded: the same calls every time), turns
each into what the store would hold (its ``state`` JSON, its event set with a delivery time per
event) and trains one 16 KB dictionary on each, written to ``callstate/dictionaries/<id>.zdict``.

A shipped dictionary never changes once released: values stored with it must stay readable. A
better one gets a new ID in :mod:`callstate.compression` and this script's table, and the old file
stays. What the dictionaries learn is what every call shares (JSON names, statuses, Twilio's
parameter names and words, URL prefixes), not the calls themselves: their SIDs and numbers are
random.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Final

import zstandard

from callstate import compression, eventset
from callstate.traffic import make_history
from workers import codec
from workers.reduce import reduce

_CALLS: Final = 8_000
_SIZE: Final = 16_384
_OUT: Final = Path(__file__).resolve().parent.parent / "callstate" / "dictionaries"


def samples(rng: random.Random, calls: int) -> tuple[list[bytes], list[bytes]]:
    """(state JSONs, uncompressed event sets) of ``calls`` simulated calls."""
    states: list[bytes] = []
    sets: list[bytes] = []
    clock = 1_764_480_000.0
    for _ in range(calls):
        sid = f"CA{rng.getrandbits(128):032x}"
        history = make_history(rng, sid)
        entries: dict[str, eventset.Entry] = {}
        additions = []
        for event in history:
            clock += rng.random()
            received = clock if event.source == "twilio" else None
            for _ in range(2 if rng.random() < 0.1 else 1):  # a tenth redelivered
                additions.append(eventset.Addition(codec.field(event), codec.encode(event), received))
        eventset.add(entries, additions, cap=200, width=codec.PREFERENCE_WIDTH)
        sets.append(eventset.serialize(entries))
        states.append(reduce(sid, history).to_json())
    return states, sets


def main() -> None:
    states, sets = samples(random.Random(13), _CALLS)
    _OUT.mkdir(exist_ok=True)
    for dictionary_id, data in (
        (compression.STATE_DICTIONARY, states),
        (compression.EVENTS_DICTIONARY, sets),
    ):
        trained = zstandard.train_dictionary(
            _SIZE, data, dict_id=dictionary_id, level=compression.LEVEL, threads=1
        )
        path = _OUT / f"{dictionary_id}.zdict"
        path.write_bytes(trained.as_bytes())
        raw = sum(map(len, data)) / len(data)
        compressor = zstandard.ZstdCompressor(
            level=compression.LEVEL, dict_data=trained, write_checksum=False
        )
        packed = sum(len(compressor.compress(d)) for d in data) / len(data)
        print(f"{path.name}: {len(trained.as_bytes()):,} bytes; samples {raw:,.0f} -> {packed:,.0f} bytes")


if __name__ == "__main__":
    main()
