"""Group commit: batching, spacing, and failing closed (with a writer of the test's own)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from callstate.errors import StoreUnavailable
from receiver.groupcommit import GroupCommit


class Writer:
    """Records each batch and when it was written; can be made to fail or to block."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.times: list[float] = []
        self.fail: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        #: What the writer reports as jobs waiting in the queue after each write.
        self.backlog = 0

    def __call__(self, items: Sequence[dict[str, Any]]) -> int:
        self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        self.batches.append(list(items))
        self.times.append(time.monotonic())
        return self.backlog


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class TestGroupCommit:
    def test_a_lone_item_is_written_at_once(self) -> None:
        """At low load nothing waits for company."""

        async def scenario() -> float:
            writer = Writer()
            commit = GroupCommit(writer, min_interval=0.5)
            started = time.monotonic()
            await commit.submit({"n": 1})
            elapsed = time.monotonic() - started
            await commit.aclose()
            assert writer.batches == [[{"n": 1}]]
            return elapsed

        assert run(scenario()) < 0.25

    def test_items_arriving_during_a_write_share_the_next_batch(self) -> None:
        """While one batch is written, the next one fills; then it goes as one write."""

        async def scenario() -> Writer:
            writer = Writer()
            commit = GroupCommit(writer)
            writer.gate.clear()
            first = asyncio.create_task(commit.submit({"n": 0}))
            await asyncio.sleep(0.05)  # the first write is now blocked in the writer
            rest = [asyncio.create_task(commit.submit({"n": n})) for n in range(1, 11)]
            await asyncio.sleep(0.05)
            writer.gate.set()
            await asyncio.gather(first, *rest)
            await commit.aclose()
            return writer

        writer = run(scenario())
        assert [len(batch) for batch in writer.batches] == [1, 10]

    def test_batches_are_capped(self) -> None:
        """No job carries more than max_batch items."""

        async def scenario() -> Writer:
            writer = Writer()
            commit = GroupCommit(writer, max_batch=4)
            await asyncio.gather(*(commit.submit({"n": n}) for n in range(10)))
            await commit.aclose()
            return writer

        writer = run(scenario())
        assert max(len(batch) for batch in writer.batches) <= 4
        assert sorted(item["n"] for batch in writer.batches for item in batch) == list(range(10))

    def test_writes_are_spaced_by_the_minimum_interval(self) -> None:
        """Under a steady trickle, writes come min_interval apart and carry several items."""

        async def scenario() -> Writer:
            writer = Writer()
            commit = GroupCommit(writer, min_interval=0.05)
            tasks = []
            for n in range(20):
                tasks.append(asyncio.create_task(commit.submit({"n": n})))
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
            await commit.aclose()
            return writer

        writer = run(scenario())
        gaps = [later - earlier for earlier, later in zip(writer.times, writer.times[1:], strict=False)]
        assert min(gaps) >= 0.045
        assert len(writer.batches) < 20

    def test_a_failed_write_fails_every_item_of_its_batch(self) -> None:
        """Fail closed: no caller returns normally unless its batch was written."""

        async def scenario() -> list[BaseException | None]:
            writer = Writer()
            writer.fail = ConnectionError("redis is down")
            commit = GroupCommit(writer)
            results = await asyncio.gather(
                *(commit.submit({"n": n}) for n in range(3)), return_exceptions=True
            )
            await commit.aclose()
            return results

        results = run(scenario())
        assert all(isinstance(result, StoreUnavailable) for result in results)

    def test_close_writes_what_is_pending_then_refuses(self) -> None:
        """Shutdown drains the pending items; later submissions get StoreUnavailable."""

        async def scenario() -> Writer:
            writer = Writer()
            commit = GroupCommit(writer, min_interval=10)
            await commit.submit({"n": 0})
            pending = asyncio.create_task(commit.submit({"n": 1}))
            await asyncio.sleep(0.01)
            await commit.aclose()
            await pending
            with pytest.raises(StoreUnavailable):
                await commit.submit({"n": 2})
            return writer

        writer = run(scenario())
        assert [item["n"] for batch in writer.batches for item in batch] == [0, 1]

    def test_a_backlog_makes_bigger_batches(self) -> None:
        """While jobs wait in the queue, a batch waits for behind_batch items (or the longer
        interval) instead of going out at the short one."""

        async def scenario(backlog: int) -> Writer:
            writer = Writer()
            writer.backlog = backlog
            commit = GroupCommit(writer, min_interval=0.01, behind_interval=5, behind_batch=8)
            await commit.submit({"n": 0})
            tasks = []
            for n in range(1, 17):
                tasks.append(asyncio.create_task(commit.submit({"n": n})))
                await asyncio.sleep(0.005)
            await asyncio.gather(*tasks)
            await commit.aclose()
            return writer

        keeping_up = run(scenario(backlog=0))
        behind = run(scenario(backlog=10))
        assert [len(batch) for batch in behind.batches] == [1, 8, 8]
        assert len(keeping_up.batches) > len(behind.batches)
