"""The group commit's pacing policy, with numbers: no clock, no event loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.pacing import BEHIND, Pacing

NEVER = float("-inf")
POLICY = Pacing(max_batch=100, min_interval=0.002, behind_interval=0.025, behind_batch=16)

seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
counts = st.integers(min_value=1, max_value=300)
backlogs = st.integers(min_value=0, max_value=1000)


class TestKeepingUp:
    def test_the_first_batch_goes_at_once(self) -> None:
        """Nothing was written before: no wait, even with a long interval."""
        assert Pacing(min_interval=3600).delay(now=5.0, last_write=NEVER, pending=1, backlog=0) == 0.0

    def test_a_batch_waits_out_the_rest_of_the_minimum_interval(self) -> None:
        """1 ms after a write, a batch waits the other 1 ms of the 2 ms interval."""
        assert POLICY.delay(now=10.001, last_write=10.0, pending=3, backlog=0) == pytest.approx(0.001)

    def test_a_lone_item_after_a_quiet_spell_goes_at_once(self) -> None:
        """The previous write is long past: no wait."""
        assert POLICY.delay(now=20.0, last_write=10.0, pending=1, backlog=0) == 0.0

    def test_a_full_batch_never_waits(self) -> None:
        """max_batch items go at once, right after a write and with the workers behind."""
        assert POLICY.delay(now=10.0, last_write=10.0, pending=100, backlog=0) == 0.0
        assert POLICY.delay(now=10.0, last_write=10.0, pending=100, backlog=BEHIND + 1) == 0.0


class TestBehind:
    def test_behind_means_more_than_the_threshold(self) -> None:
        """A backlog of exactly BEHIND jobs is keeping up; one more is behind."""
        at_threshold = POLICY.delay(now=10.0, last_write=10.0, pending=1, backlog=BEHIND)
        over = POLICY.delay(now=10.0, last_write=10.0, pending=1, backlog=BEHIND + 1)
        assert at_threshold == pytest.approx(0.002)
        assert over == pytest.approx(0.025)

    def test_a_small_batch_waits_for_the_longer_interval(self) -> None:
        """Behind, 10 ms after a write, 5 items wait the other 15 ms."""
        assert POLICY.delay(now=10.010, last_write=10.0, pending=5, backlog=50) == pytest.approx(0.015)

    def test_enough_items_only_wait_for_the_minimum_interval(self) -> None:
        """Behind, behind_batch items in hand go at the short interval."""
        assert POLICY.delay(now=10.001, last_write=10.0, pending=16, backlog=50) == pytest.approx(0.001)
        assert POLICY.delay(now=10.002, last_write=10.0, pending=16, backlog=50) == 0.0

    def test_out_of_order_settings_are_normalised(self) -> None:
        """behind_interval is at least min_interval; behind_batch at most max_batch."""
        policy = Pacing(max_batch=8, min_interval=0.5, behind_interval=0.1, behind_batch=64)
        assert (policy.behind_interval, policy.behind_batch) == (0.5, 8)


class TestProperties:
    @given(seconds, seconds, seconds, counts, backlogs)
    def test_the_wait_only_shrinks_as_time_passes(
        self, last_write: float, elapsed: float, more: float, pending: int, backlog: int
    ) -> None:
        """Asking again later gives the same write time, or "now" once it has passed."""
        now = last_write + elapsed
        earlier = POLICY.delay(now, last_write, pending, backlog)
        later = POLICY.delay(now + more, last_write, pending, backlog)
        assert later <= earlier
        if later > 0:
            assert now + more + later == pytest.approx(now + earlier, abs=1e-6)

    @given(seconds, seconds, counts, backlogs)
    def test_the_wait_is_bounded_by_the_behind_interval(
        self, last_write: float, elapsed: float, pending: int, backlog: int
    ) -> None:
        """Whatever the load, a batch never waits longer than behind_interval."""
        assert 0.0 <= POLICY.delay(last_write + elapsed, last_write, pending, backlog) <= 0.025

    @given(seconds, seconds, counts, counts, backlogs)
    def test_more_items_never_wait_longer(
        self, last_write: float, elapsed: float, pending: int, extra: int, backlog: int
    ) -> None:
        """An arriving item can end a wait early, never lengthen it."""
        now = last_write + elapsed
        assert POLICY.delay(now, last_write, pending + extra, backlog) <= POLICY.delay(
            now, last_write, pending, backlog
        )
