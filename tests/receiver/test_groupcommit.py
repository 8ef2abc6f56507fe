"""Group commit: batching, the pacing it obeys, and failing closed (with a writer of the test's own).

No test here sleeps or reads a clock: the writer is held at a gate the test opens, the test waits
for events the writer signals (or for items to be pending), and batches are compared as multisets
wherever two writes run concurrently. The timing policy itself is tested with numbers in
test_pacing.py; here intervals are an hour long, so "waits" cannot end by itself during a test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from callstate.errors import StoreUnavailable
from receiver.groupcommit import GroupCommit
from tests.procs import eventually

T = TypeVar("T")
HOUR = 3600.0
#: Generous: on a loaded machine a step may take long, but never this long.
DEADLINE = 30.0


class Writer:
    """Records each batch; blocks at ``gate`` until the test opens it; can be made to fail.

    Called on the group commit's threads; tells the event loop each time a write enters.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.batches: list[list[int]] = []
        self.fail: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        #: What the writer reports as jobs waiting in the queue after each write.
        self.backlog = 0
        self._lock = threading.Lock()
        self._entered = 0
        self._changed = asyncio.Event()

    def __call__(self, items: Sequence[dict[str, Any]]) -> int:
        with self._lock:
            self._entered += 1
        self.loop.call_soon_threadsafe(self._changed.set)
        if not self.gate.wait(DEADLINE):
            raise AssertionError("the test never opened the gate")
        if self.fail is not None:
            raise self.fail
        with self._lock:
            self.batches.append([item["n"] for item in items])
        return self.backlog

    @property
    def entered(self) -> int:
        with self._lock:
            return self._entered

    async def wait_entered(self, count: int) -> None:
        """Return once ``count`` writes have entered the writer (in any order)."""
        while self.entered < count:
            self._changed.clear()
            if self.entered < count:
                await asyncio.wait_for(self._changed.wait(), DEADLINE)

    def multiset(self) -> list[tuple[int, ...]]:
        """The batches, each sorted, in sorted order: what was written together, whatever the order."""
        return sorted(tuple(sorted(batch)) for batch in self.batches)


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``predicate`` holds; fail after a generous deadline."""
    await eventually(predicate, what, timeout=DEADLINE, poll=0.001)


def run(scenario: Callable[[Writer], Coroutine[Any, Any, T]]) -> T:
    """Run ``scenario(writer)`` in a fresh event loop, within the deadline."""

    async def main() -> T:
        return await asyncio.wait_for(scenario(Writer(asyncio.get_running_loop())), 2 * DEADLINE)

    return asyncio.run(main())


def submit_all(commit: GroupCommit, numbers: range) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(commit.submit({"n": n})) for n in numbers]


class TestBatching:
    def test_a_lone_item_is_written_at_once(self) -> None:
        """Nothing was written before: the item does not wait out the (hour-long) interval."""

        async def scenario(writer: Writer) -> list[list[int]]:
            commit = GroupCommit(writer, min_interval=HOUR)
            await commit.submit({"n": 1})
            await commit.aclose()
            return writer.batches

        assert run(scenario) == [[1]]

    def test_items_arriving_during_a_write_share_the_next_batch(self) -> None:
        """While one batch is written, the next one fills; then it goes as one write."""

        async def scenario(writer: Writer) -> list[list[int]]:
            commit = GroupCommit(writer, in_flight=1)
            writer.gate.clear()
            first = asyncio.create_task(commit.submit({"n": 0}))
            await writer.wait_entered(1)
            rest = submit_all(commit, range(1, 11))
            await until(lambda: commit.pending == 10, "ten items pending")
            writer.gate.set()
            await asyncio.gather(first, *rest)
            await commit.aclose()
            return [sorted(batch) for batch in writer.batches]

        # One write at a time (in_flight=1), so the order of the batches is determined.
        assert run(scenario) == [[0], list(range(1, 11))]

    def test_two_writes_are_in_flight_at_once(self) -> None:
        """With in_flight=2 a second batch is written while the first waits; a third waits for a slot."""

        async def scenario(writer: Writer) -> tuple[int, list[tuple[int, ...]]]:
            commit = GroupCommit(writer, in_flight=2)
            writer.gate.clear()
            tasks = submit_all(commit, range(1))
            await writer.wait_entered(1)
            tasks += submit_all(commit, range(1, 2))
            await writer.wait_entered(2)
            tasks += submit_all(commit, range(2, 6))
            await until(lambda: commit.pending == 4, "four items pending")
            inside_while_both_slots_busy = writer.entered
            writer.gate.set()
            await asyncio.gather(*tasks)
            await commit.aclose()
            return inside_while_both_slots_busy, writer.multiset()

        inside, batches = run(scenario)
        assert inside == 2
        assert batches == [(0,), (1,), (2, 3, 4, 5)]

    def test_batches_are_capped(self) -> None:
        """No job carries more than max_batch items; every item is written once."""

        async def scenario(writer: Writer) -> list[list[int]]:
            commit = GroupCommit(writer, max_batch=4, in_flight=1)
            writer.gate.clear()
            tasks = submit_all(commit, range(1))
            await writer.wait_entered(1)
            tasks += submit_all(commit, range(1, 11))
            await until(lambda: commit.pending == 10, "ten items pending")
            writer.gate.set()
            await asyncio.gather(*tasks)
            await commit.aclose()
            return [sorted(batch) for batch in writer.batches]

        assert run(scenario) == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


class TestPacing:
    def test_items_after_a_write_wait_for_the_interval(self) -> None:
        """Within min_interval of a write, items are held back together (here until close)."""

        async def scenario(writer: Writer) -> list[list[int]]:
            commit = GroupCommit(writer, min_interval=HOUR)
            await commit.submit({"n": 0})
            tasks = submit_all(commit, range(1, 4))
            await until(lambda: commit.pending == 3, "three items pending")
            held = [sorted(batch) for batch in writer.batches]
            await commit.aclose()
            await asyncio.gather(*tasks)
            assert held == [[0]]
            return [sorted(batch) for batch in writer.batches]

        assert run(scenario) == [[0], [1, 2, 3]]

    def test_a_backlog_holds_items_until_behind_batch_are_in_hand(self) -> None:
        """While the writer reports jobs waiting, a batch waits for behind_batch items (the
        behind_interval is an hour), then goes at once."""

        async def scenario(writer: Writer) -> list[list[int]]:
            writer.backlog = 10
            commit = GroupCommit(writer, behind_interval=HOUR, behind_batch=3)
            await commit.submit({"n": 0})  # nothing written before: goes at once; reports the backlog
            held = submit_all(commit, range(1, 3))
            await until(lambda: commit.pending == 2, "two items pending")
            third = asyncio.create_task(commit.submit({"n": 3}))
            await asyncio.gather(*held, third)
            await commit.aclose()
            return [sorted(batch) for batch in writer.batches]

        assert run(scenario) == [[0], [1, 2, 3]]

    def test_without_a_backlog_each_item_goes_on_its_own(self) -> None:
        """Keeping up (and no minimum interval), a second item does not wait for company."""

        async def scenario(writer: Writer) -> list[list[int]]:
            commit = GroupCommit(writer, behind_interval=HOUR, behind_batch=3)
            await commit.submit({"n": 0})
            await commit.submit({"n": 1})
            await commit.aclose()
            return writer.batches

        assert run(scenario) == [[0], [1]]


class TestFailingClosed:
    def test_a_failed_write_fails_every_item_of_its_batch(self) -> None:
        """Fail closed: no caller returns normally unless its batch was written."""

        async def scenario(writer: Writer) -> list[BaseException | None]:
            writer.fail = ConnectionError("redis is down")
            commit = GroupCommit(writer)
            results = await asyncio.gather(
                *(commit.submit({"n": n}) for n in range(3)), return_exceptions=True
            )
            await commit.aclose()
            return results

        results = run(scenario)
        assert len(results) == 3
        assert all(isinstance(result, StoreUnavailable) for result in results)

    def test_close_writes_what_is_pending_then_refuses(self) -> None:
        """Shutdown drains the pending items; later submissions get StoreUnavailable."""

        async def scenario(writer: Writer) -> list[list[int]]:
            commit = GroupCommit(writer, min_interval=HOUR)
            await commit.submit({"n": 0})
            pending = asyncio.create_task(commit.submit({"n": 1}))
            await until(lambda: commit.pending == 1, "the item pending")
            await commit.aclose()
            await pending
            with pytest.raises(StoreUnavailable):
                await commit.submit({"n": 2})
            return writer.batches

        assert run(scenario) == [[0], [1]]


class TestAnswerTime:
    def test_an_item_stuck_behind_hanging_writes_is_refused_in_time_and_never_written(self) -> None:
        """Both write slots hang and a third item waits for one: all three get StoreUnavailable
        once ``answer_within`` has passed (the total, not per step), and the item that never left
        the queue is withdrawn: when Redis answers again it is not written after its 503."""

        async def scenario(writer: Writer) -> list[list[int]]:
            writer.gate.clear()
            commit = GroupCommit(writer, in_flight=2, answer_within=0.2)
            first = submit_all(commit, range(1, 2))
            await writer.wait_entered(1)
            second = submit_all(commit, range(2, 3))
            await writer.wait_entered(2)
            third = submit_all(commit, range(3, 4))
            results = await asyncio.gather(*first, *second, *third, return_exceptions=True)
            assert all(isinstance(result, StoreUnavailable) for result in results), results
            writer.gate.set()
            await commit.submit({"n": 4})
            await commit.aclose()
            return writer.batches

        batches = run(scenario)
        assert [3] not in batches
        assert [4] in batches
