"""Buckets: the global indexes and the change stream, split by CallSid so no slot is hot.

On a Redis Cluster every key lives in one slot, served by one master. If every event touched the
same index key, that one master would take every event's index update
(docs/contracts.md, "Where the store lives"). So each global index and the change stream exist
once per *bucket*: a
call's entries go to bucket ``crc32(CallSid) mod count``, and a bucket's keys share the hash tag
``{callstate:<bucket>}``, so the script that publishes a batch to one bucket stays atomic.

The count is chosen by the first worker that meets an empty store (1 on a plain Redis, where a
slot costs nothing and one index reads fastest; :data:`CLUSTER_BUCKETS` on a cluster) and written
at ``callstate:{callstate}:buckets``; everyone reads it from there and it never changes while the
store lives.

Readers merge the buckets: :func:`newest_first` turns one page per bucket into one page of the
whole index, in the order ``ZREVRANGE`` gives one sorted set (score descending, then member
descending), and :func:`merged_page` reads those pages in one round trip. Pure parts first, the
Redis reads after.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:  # callstate.connection reads the count with parse_count
    from callstate.connection import StoreClient

#: Buckets on a Redis Cluster: enough to spread over a few masters evenly, few enough that a
#: reader's merge (one ZREVRANGE per bucket) stays one cheap round trip.
CLUSTER_BUCKETS: Final = 16
#: The most buckets a store may declare (a reader sends one command per bucket).
MAX_BUCKETS: Final = 1024

#: One index entry as ZRANGE ... WITHSCORES gives it: member, score.
Entry = tuple[bytes, float]


def bucket_of(member: str, count: int) -> int:
    """The bucket of a call (its CallSid, or its record name), among ``count``."""
    return zlib.crc32(member.encode()) % count


def newest_first(pages: Iterable[Sequence[Entry]], limit: int) -> list[Entry]:
    """The ``limit`` newest entries of several ``ZREVRANGE ... WITHSCORES`` pages, merged.

    Ties in score are ordered by member descending, as Redis orders one sorted set, so one bucket
    and many buckets list the same calls in the same order.
    """
    merged = heapq.merge(*pages, key=lambda entry: (-entry[1], _descending(entry[0])))
    return [entry for _, entry in zip(range(limit), merged, strict=False)]


def _descending(member: bytes) -> tuple[int, ...]:
    # heapq.merge sorts ascending; a member's bytes negated sort in the reverse order, and the
    # trailing 1 (above any negated byte) puts a member after every longer member it prefixes,
    # as descending order does.
    return (*(-byte for byte in member), 1)


def parse_count(raw: bytes | str | None) -> int:
    """The stored bucket count; 1 when no worker has written one yet (an empty store)."""
    if raw is None:
        return 1
    count = int(raw)
    if not 1 <= count <= MAX_BUCKETS:
        raise ValueError(f"bucket count {count} is out of range")
    return count


def read_count(client: StoreClient, key: str) -> int:
    """The bucket count stored at ``key``."""
    return parse_count(cast(bytes | None, client.get(key)))


def merged_page(
    client: StoreClient,
    index_of: Callable[[int], str],
    count: int,
    *,
    offset: int,
    limit: int,
    newest: float | str = "+inf",
    oldest: float | str = "-inf",
) -> list[Entry]:
    """Entries ``offset .. offset + limit`` of an index split into ``count`` buckets, newest first,
    among scores between ``oldest`` and ``newest``: one ``ZREVRANGEBYSCORE`` per bucket, one round
    trip (one per master on a cluster)."""
    pipe = client.pipeline(transaction=False)
    for bucket in range(count):
        pipe.zrevrangebyscore(index_of(bucket), newest, oldest, start=0, num=offset + limit, withscores=True)
    pages: list[Any] = pipe.execute()
    return newest_first(pages, offset + limit)[offset:]


def total(client: StoreClient, index_of: Callable[[int], str], count: int) -> int:
    """The number of entries in every bucket of an index together."""
    pipe = client.pipeline(transaction=False)
    for bucket in range(count):
        pipe.zcard(index_of(bucket))
    return sum(int(size) for size in pipe.execute())


def oldest_first(pages: Iterable[Sequence[Entry]], limit: int) -> list[Entry]:
    """The ``limit`` oldest entries of several ``ZRANGE ... WITHSCORES`` pages, merged (score
    ascending, then member ascending, as Redis orders one sorted set)."""
    merged = heapq.merge(*pages, key=lambda entry: (entry[1], entry[0]))
    return [entry for _, entry in zip(range(limit), merged, strict=False)]


def merged_oldest(
    client: StoreClient, index_of: Callable[[int], str], count: int, *, newest: float, limit: int
) -> list[Entry]:
    """The ``limit`` oldest entries scored at or before ``newest`` of an index split into ``count``
    buckets: one ``ZRANGEBYSCORE`` per bucket, one round trip."""
    pipe = client.pipeline(transaction=False)
    for bucket in range(count):
        pipe.zrangebyscore(index_of(bucket), "-inf", newest, start=0, num=limit, withscores=True)
    pages: list[Any] = pipe.execute()
    return oldest_first(pages, limit)
