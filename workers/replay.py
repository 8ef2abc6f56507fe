"""Replay: recompute stored calls from their stored events (``callstate replay``).

The state is a pure function of the event set, so a reducer fix is applied to existing data by
reducing every call again; :meth:`Store.refresh` writes only the calls whose state changes, and
publishes those changes like any other. A call without stored events is not replayed (reducing
nothing would store a state for a call that never existed): it is reported as unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

from callstate import keys
from callstate.event import CALL_RECORD
from workers.store import Store

#: Calls refreshed per round trip.
CHUNK: Final = 200


@dataclass(slots=True)
class Replayed:
    """What a replay did: calls recomputed, how many changed, and the CallSids with no events."""

    calls: int = 0
    changed: int = 0
    unknown: list[str] = field(default_factory=list)


def stored_call_sids(store: Store) -> Iterator[str]:
    """Every call record (CallSid, or CallSid:tenant) in the store, by scanning the call hashes (no
    index is trusted)."""
    return scan_records(store, keys.call)


def scan_records(store: Store, key_of: Callable[[str], str]) -> Iterator[str]:
    """Every call record ``r`` for which the key ``key_of(r)`` exists (a SCAN over the store)."""
    pattern = key_of("*")
    prefix, suffix = pattern.split("*")
    for raw in store.redis.scan_iter(match=pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        sid = key[len(prefix) : len(key) - len(suffix)]
        if CALL_RECORD.fullmatch(sid):
            yield sid


def replay(
    store: Store,
    call_sids: Iterable[str] | None = None,
    progress: Callable[[Replayed], None] | None = None,
) -> Replayed:
    """Refresh ``call_sids`` (every stored call when ``None``) that have stored events; the others
    are listed in :attr:`Replayed.unknown` and left untouched. ``progress`` is called after every
    chunk."""
    sids = iter(call_sids) if call_sids is not None else stored_call_sids(store)
    done = Replayed()
    while chunk := list(islice(sids, CHUNK)):
        with store.redis.pipeline(transaction=False) as pipe:
            for sid in chunk:
                pipe.hexists(keys.call(sid), "events")
            present = pipe.execute()
        known = [sid for sid, exists in zip(chunk, present, strict=True) if exists]
        done.unknown += [sid for sid, exists in zip(chunk, present, strict=True) if not exists]
        if known:
            result = store.refresh(known)
            done.calls += result.calls
            done.changed += len(result.changed)
        if progress is not None:
            progress(done)
    return done
