"""Replay: recompute stored calls from their stored events (``callstate replay``).

The state is a pure function of the event set, so a reducer fix is applied to existing data by
reducing every call again; :meth:`Store.refresh` writes only the calls whose state changes, and
publishes those changes like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Final

from callstate import keys
from callstate.event import CALL_SID
from workers.store import Store

#: Calls refreshed per round trip.
CHUNK: Final = 200


def stored_call_sids(store: Store) -> Iterator[str]:
    """Every CallSid with stored events, by scanning the event-set keys (no index is trusted)."""
    pattern = keys.events("*")
    prefix, suffix = pattern.split("*")
    for raw in store.redis.scan_iter(match=pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        sid = key[len(prefix) : len(key) - len(suffix)]
        if CALL_SID.fullmatch(sid):
            yield sid


def replay(store: Store, call_sids: Iterable[str] | None = None) -> tuple[int, int]:
    """Refresh ``call_sids`` (every stored call when ``None``); returns (calls, changed)."""
    sids = iter(call_sids) if call_sids is not None else stored_call_sids(store)
    calls = changed = 0
    while chunk := list(islice(sids, CHUNK)):
        result = store.refresh(chunk)
        calls += result.calls
        changed += len(result.changed)
    return calls, changed
