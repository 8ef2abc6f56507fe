"""Pruning: remove the global index entries of calls whose keys have expired.

Per-call keys expire by TTL (the retention); the global indexes (RECENT, ACTIVE, FINAL, the status
zsets, PUBLISHED) cannot, so the sweep prunes them, a bounded number per run. An entry goes only when its
call key is gone *and* its score is older than the retention, checked again atomically in a script
over one bucket's keys only (Cluster-safe), so a call that came back meanwhile keeps its entries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from callstate import keys
from callstate.buckets import merged_oldest
from workers.store import Store, index_keys

#: Index entries checked for pruning per sweep: one EXISTS each, pipelined.
PRUNE_LIMIT: Final = 1000

# Removes the index entries of expired calls; only global keys ({callstate}), so Cluster-safe.
# KEYS: published, recent, then the other indexes (workers.store.index_keys). ARGV[1] the score
# cutoff, then pairs of (call record, the PUBLISHED value read before the call key was found
# missing, '' for none).
# An entry is removed only if nothing published the call since that read (same PUBLISHED value)
# and its RECENT score is still old: a call that came back meanwhile keeps its entries.
PRUNE_SCRIPT: Final = """
local cutoff = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV, 2 do
  local sid, expected = ARGV[i], ARGV[i + 1]
  local published = redis.call('HGET', KEYS[1], sid) or ''
  local score = redis.call('ZSCORE', KEYS[2], sid)
  if published == expected and (not score or tonumber(score) <= cutoff) then
    redis.call('HDEL', KEYS[1], sid)
    for k = 2, #KEYS do
      redis.call('ZREM', KEYS[k], sid)
    end
    removed = removed + 1
  end
end
return removed
"""


def members(reply: Any) -> list[str]:
    """Sorted-set members as strings (the client returns bytes)."""
    return [m.decode() if isinstance(m, bytes) else str(m) for m in reply]


def prune(store: Store, *, now: float, limit: int = PRUNE_LIMIT) -> int:
    """Remove the index entries of calls whose key expired and whose RECENT score is older than
    the retention; look at ``limit`` entries at most, oldest first. Returns how many were removed.

    Every index entry of a call (ACTIVE, FINAL, status zsets, PUBLISHED) has a RECENT entry with the same
    score, so RECENT is the one scanned.
    """
    cutoff = now - store.retention
    oldest = merged_oldest(store.redis, keys.recent, store.buckets, newest=cutoff, limit=limit)
    by_bucket: dict[int, list[str]] = defaultdict(list)
    for record in members(member for member, _ in oldest):
        by_bucket[store.bucket(record)].append(record)
    # One script per bucket: it touches only that bucket's keys (one slot on a cluster).
    return sum(_prune_bucket(store, bucket, cutoff, old) for bucket, old in by_bucket.items())


def _prune_bucket(store: Store, bucket: int, cutoff: float, old: list[str]) -> int:
    redis = store.redis
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(keys.published(bucket), old)
    for sid in old:
        pipe.exists(keys.call(sid))
    published, *exists = pipe.execute()
    args: list[str | float] = [cutoff]
    for sid, seen, alive in zip(old, published, exists, strict=True):
        if not alive:
            args += [sid, seen.decode() if seen is not None else ""]
    if len(args) == 1:
        return 0
    return int(redis.register_script(PRUNE_SCRIPT)(keys=index_keys(bucket), args=args))
