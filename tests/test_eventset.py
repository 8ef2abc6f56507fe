"""callstate.eventset and callstate.compression: the call's stored event set, in memory."""

from __future__ import annotations

import contextlib
import random
import threading

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from callstate import compression, eventset
from callstate.errors import UnreadableValue
from callstate.eventset import Addition, Entry
from callstate.traffic import make_history
from workers import codec
from workers.reduce import reduce

WIDTH = 2

#: Few slots and few values per slot, so that additions collide and re-splits compete.
additions = st.builds(
    Addition,
    slot=st.sampled_from(["c:twilio:aa", "c:twilio:bb", "r:twilio:cc", "c:rest:dd"]),
    value=st.binary(min_size=WIDTH, max_size=WIDTH + 3),
    received_at=st.one_of(st.none(), st.floats(1e9, 2e9, allow_nan=False).map(lambda t: round(t, 3))),
)
entries = st.dictionaries(
    st.text(min_size=1, max_size=30),
    st.builds(
        Entry,
        value=st.binary(max_size=200),
        deliveries=st.integers(0, 2**40),
        first_ms=st.one_of(st.none(), st.integers(0, 2**45)),
    ),
    max_size=20,
)


def added(items: list[Addition], cap: int = 200) -> dict[str, Entry]:
    stored: dict[str, Entry] = {}
    eventset.add(stored, items, cap=cap, width=WIDTH)
    return stored


@given(st.lists(additions, max_size=30), st.randoms(use_true_random=False), st.lists(st.integers(1, 5)))
def test_any_order_and_any_grouping_give_the_same_set(
    items: list[Addition], rng: random.Random, sizes: list[int]
) -> None:
    """Adding the same additions in any order, in any number of calls, gives the same entries:
    each slot keeps the value with the greatest preference, counts every delivery and keeps the
    earliest time."""
    expected = added(items)
    shuffled = list(items)
    rng.shuffle(shuffled)
    got: dict[str, Entry] = {}
    at = 0
    for size in [*sizes, len(shuffled)]:
        eventset.add(got, shuffled[at : at + size], cap=200, width=WIDTH)
        at += size
    assert got == expected
    for slot, entry in expected.items():
        mine = [a for a in items if a.slot == slot]
        assert entry.value[:WIDTH] == max(a.value[:WIDTH] for a in mine)
        assert entry.deliveries == len(mine)
        times = [round(a.received_at * 1000) for a in mine if a.received_at is not None]
        assert entry.first_ms == (min(times) if times else None)


@given(st.lists(additions, min_size=1, max_size=30), st.integers(0, 30))
def test_combining_two_sets_of_one_slot_is_adding_all_their_deliveries(
    items: list[Addition], cut: int
) -> None:
    """A slot counted partly in one set and partly in another (schema 2's keys and schema 3's
    field, during an upgrade) combines to what one set given every delivery holds."""
    slot_items = [a for a in items if a.slot == items[0].slot]
    first, second = added(slot_items[:cut]), added(slot_items[cut:])
    slot = items[0].slot
    if slot in first and slot in second:
        combined = eventset.combine(first[slot], second[slot], width=WIDTH)
    else:
        combined = (first | second)[slot]
    assert combined == added(slot_items)[slot]


@given(st.lists(additions, max_size=30), st.integers(0, 3))
def test_new_slots_over_the_cap_are_refused_and_not_counted(items: list[Addition], cap: int) -> None:
    stored: dict[str, Entry] = {}
    done = eventset.add(stored, items, cap=cap, width=WIDTH)
    assert len(stored) <= cap
    assert sum(entry.deliveries for entry in stored.values()) == len(items) - done.refused
    assert done.added == len(stored)


@given(entries)
def test_serialize_then_parse_gives_the_entries_back(stored: dict[str, Entry]) -> None:
    assert eventset.parse(eventset.serialize(stored)) == stored
    assert eventset.load(eventset.dump(stored)) == stored


@given(st.binary(max_size=300))
def test_anything_else_is_unreadable_never_another_error(data: bytes) -> None:
    """Bytes that serialize() did not make (here: almost any) raise UnreadableValue or, when they
    happen to be a well-formed set, parse to one; nothing else escapes."""
    with contextlib.suppress(UnreadableValue):
        eventset.parse(data)
    with pytest.raises(UnreadableValue):
        eventset.load(data + b"not a frame")


def test_a_frame_made_with_a_dictionary_this_version_does_not_ship_is_unreadable() -> None:
    foreign = zstandard.ZstdCompressionDict(b"x" * 2000, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    frame = zstandard.ZstdCompressor(dict_data=foreign).compress(b"{}")
    with pytest.raises(UnreadableValue):
        compression.decompress(frame)
    with pytest.raises(UnreadableValue, match="unknown dictionary"):
        compression.dictionary_bytes(1)


def test_frames_name_their_dictionary_and_shrink_a_real_call() -> None:
    """A realistic call's state and event set compress to a fraction, each frame naming the
    dictionary it was made with, and come back byte for byte."""
    sid = "CA" + "7" * 32
    rng = random.Random(3)
    history = make_history(rng, sid)
    while len(history) < 4:  # a call with a few events and a recording, as most are
        history = make_history(rng, sid)
    state = reduce(sid, history).to_json()
    stored = added([Addition(codec.field(e), codec.encode(e), 1_790_000_000.0) for e in history])
    for data, frame, dictionary in (
        (state, compression.store_state(state), compression.STATE_DICTIONARY),
        (eventset.serialize(stored), eventset.dump(stored), compression.EVENTS_DICTIONARY),
    ):
        assert zstandard.get_frame_parameters(frame).dict_id == dictionary
        assert compression.decompress(frame) == data
        assert len(frame) < len(data) * 0.6


def test_threads_compress_and_decompress_at_once_without_mixing_frames() -> None:
    """The read API inflates states on a thread pool and a worker's sweep beside its jobs:
    eight threads compressing and inflating different data at once each get their own back
    (zstandard's objects are not thread-safe; a shared one returned another thread's bytes)."""
    datas = [b'{"sid":"CA%032d","status":"completed","n":%d}' % (n, n) * (n + 1) for n in range(8)]
    frames = [compression.store_state(data) for data in datas]
    wrong: list[int] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for _ in range(3_000):
            if (
                compression.state_json(frames[n]) != datas[n]
                or compression.store_state(datas[n]) != frames[n]
            ):
                wrong.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
