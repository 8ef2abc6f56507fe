"""callstate.buckets: an index split into buckets reads like the one sorted set it replaces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstate.buckets import bucket_of, merged_page, newest_first, parse_count, total
from callstate.connection import StoreClient

_ENTRIES = st.lists(
    st.tuples(st.binary(max_size=4), st.sampled_from([0.0, 1.0, 1.5, 2.0, 1e9])),
    unique_by=lambda entry: entry[0],
    max_size=40,
)


def reverse_sorted(entries: list[tuple[bytes, float]]) -> list[tuple[bytes, float]]:
    """What ZREVRANGE gives for one sorted set: score descending, then member descending."""
    return sorted(entries, key=lambda entry: (entry[1], entry[0]), reverse=True)


class TestNewestFirst:
    @given(_ENTRIES, st.integers(1, 8), st.integers(1, 50))
    def test_merging_buckets_gives_the_order_of_one_sorted_set(
        self, entries: list[tuple[bytes, float]], count: int, limit: int
    ) -> None:
        """Any entries, any bucket count, any limit: the merge equals ZREVRANGE of the union."""
        pages: list[list[tuple[bytes, float]]] = [[] for _ in range(count)]
        for member, score in entries:
            pages[bucket_of(member.decode("latin-1"), count)].append((member, score))
        merged = newest_first([reverse_sorted(page) for page in pages], limit)
        assert merged == reverse_sorted(entries)[:limit]

    def test_a_call_always_lands_in_the_same_bucket(self) -> None:
        """The bucket is CRC-32 of the CallSid modulo the count: stable across processes."""
        assert bucket_of("CA" + "0" * 32, 16) == bucket_of("CA" + "0" * 32, 16)
        assert {bucket_of(f"CA{n:032x}", 16) for n in range(200)} == set(range(16))


class TestCount:
    def test_an_empty_store_has_one_bucket(self) -> None:
        """No count written yet (no worker ever ran): one bucket."""
        assert parse_count(None) == 1

    @pytest.mark.parametrize("raw", [b"0", b"1025", b"-3"])
    def test_a_count_out_of_range_is_refused(self, raw: bytes) -> None:
        """A stored count of 0, over 1024 or negative is an error, not a silent default."""
        with pytest.raises(ValueError, match="out of range"):
            parse_count(raw)


@pytest.fixture(params=["redis", "cluster"])
def store(request: pytest.FixtureRequest) -> StoreClient:
    name = "redis_client" if request.param == "redis" else "cluster_client"
    client: StoreClient = request.getfixturevalue(name)
    return client


def index(bucket: int) -> str:
    return f"test:{{callstate:{bucket}}}:recent"


class TestMergedPage:
    def fill(self, store: StoreClient, count: int) -> list[tuple[bytes, float]]:
        entries = [(f"CA{n:032x}".encode(), float(n % 17)) for n in range(120)]
        for member, score in entries:
            store.zadd(index(bucket_of(member.decode(), count)), {member: score})
        return reverse_sorted(entries)

    def test_pages_of_the_merged_index_are_pages_of_the_whole(self, store: StoreClient) -> None:
        """16 buckets on one Redis or over three masters: every page, and the total, as one set."""
        expected = self.fill(store, 16)
        for offset in (0, 7, 50, 115):
            assert merged_page(store, index, 16, offset=offset, limit=10) == expected[offset : offset + 10]
        assert total(store, index, 16) == 120

    def test_a_score_window_is_applied_in_every_bucket(self, store: StoreClient) -> None:
        """newest/oldest bound the scores like ZREVRANGEBYSCORE's max and min."""
        expected = [entry for entry in self.fill(store, 16) if 3 <= entry[1] <= 5]
        assert merged_page(store, index, 16, offset=0, limit=500, newest=5, oldest=3) == expected
