"""The counters' vocabulary and the web process's in-memory tally (pure, no Redis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstate.counters import LAG_BUCKETS, LAG_FIELDS, LAG_SUM, Tally, add_lags, lag_field

#: Steps of a tally's life: count, take and write, take and fail to write.
STEPS = ("add", "written", "failed")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestLag:
    def test_a_lag_on_a_bound_falls_in_that_bound(self) -> None:
        """Buckets are `le` bounds: a lag equal to a bound belongs to it."""
        assert lag_field(0.005) == "lag_bucket:0.005"
        assert lag_field(0.0051) == "lag_bucket:0.01"

    def test_a_lag_above_the_last_bound_is_infinite(self) -> None:
        """Beyond the last bound is `+Inf`."""
        assert lag_field(LAG_BUCKETS[-1] + 1) == "lag_bucket:+Inf"

    def test_negative_lags_from_clock_skew_count_as_zero(self) -> None:
        """A worker whose clock is behind the web's measures a negative lag: it counts as 0."""
        counts: dict[str, int] = {}
        add_lags(counts, [-0.5, 0.02])
        assert counts == {LAG_FIELDS[0]: 1, "lag_bucket:0.025": 1, LAG_SUM: 20_000}

    @given(st.lists(st.floats(min_value=0, max_value=1e4), max_size=50))
    def test_every_lag_lands_in_exactly_one_bucket(self, lags: list[float]) -> None:
        """The buckets add up to the number of observations, the sum to their total (in us)."""
        counts: dict[str, int] = {}
        add_lags(counts, lags)
        assert sum(counts.get(field, 0) for field in LAG_FIELDS) == len(lags)
        assert abs(counts.get(LAG_SUM, 0) - sum(lags) * 1e6) <= len(lags)


class TestTally:
    def test_take_returns_what_was_counted_since_the_last_take(self) -> None:
        """Each count is taken once."""
        tally = Tally()
        tally.add("a")
        tally.add("a")
        tally.add("b", 3)
        assert tally.take() == {"a": 2, "b": 3}
        tally.add("a")
        assert tally.take() == {"a": 1}
        assert tally.take() == {}

    def test_counts_given_back_are_taken_again(self) -> None:
        """A write that failed gives its counts back; the next take carries them with the new ones."""
        tally = Tally()
        tally.add("a")
        failed = tally.take()
        tally.add("a")
        tally.give_back(failed)
        assert tally.take() == {"a": 2}

    def test_take_with_older_than_waits_for_the_interval(self) -> None:
        """A batch carries counts only when the previous take is old enough."""
        clock = Clock()
        tally = Tally(clock)
        tally.add("a")
        assert tally.take(older_than=0.5) == {"a": 1}
        tally.add("a")
        assert tally.take(older_than=0.5) == {}
        clock.now += 0.5
        assert tally.take(older_than=0.5) == {"a": 1}

    def test_due_when_counts_wait_longer_than_the_interval(self) -> None:
        """The flusher writes only counts that no take carried for the interval."""
        clock = Clock()
        tally = Tally(clock)
        assert not tally.due(1.0)  # nothing counted
        tally.add("a")
        assert tally.due(1.0)
        tally.take()
        tally.add("a")
        assert not tally.due(1.0)  # taken just now
        clock.now += 1.0
        assert tally.due(1.0)

    @given(
        st.lists(
            st.tuples(st.sampled_from(STEPS), st.sampled_from("ab"), st.integers(1, 5)),
            max_size=60,
        )
    )
    def test_any_sequence_writes_every_count_exactly_once(self, steps: list[tuple[str, str, int]]) -> None:
        """Whatever the order of counts, takes and failed writes, what was written plus what is
        still pending equals what was counted."""
        tally = Tally()
        counted: dict[str, int] = {}
        written: dict[str, int] = {}
        for step, field, amount in steps:
            if step == "add":
                tally.add(field, amount)
                counted[field] = counted.get(field, 0) + amount
                continue
            taken = tally.take()
            if step == "written":
                for name, n in taken.items():
                    written[name] = written.get(name, 0) + n
            else:
                tally.give_back(taken)
        for name, n in tally.take().items():
            written[name] = written.get(name, 0) + n
        assert written == counted


@pytest.mark.parametrize("bound", LAG_BUCKETS)
def test_each_bound_has_its_field(bound: float) -> None:
    """Every bound maps to its own bucket field."""
    assert lag_field(bound) == f"lag_bucket:{bound}"
