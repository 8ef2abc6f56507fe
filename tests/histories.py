"""Hypothesis strategies over the realistic histories of :mod:`callstate.traffic`.

The knowledge of what Twilio sends lives in :mod:`callstate.traffic` (the simulator and ``make bench``
use it too); this module only lets hypothesis make its decisions, so that failing examples shrink,
and adds redeliveries in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from callstate.event import Event
from callstate.traffic import call_history, sid

T = TypeVar("T")


class _DrawChoices:
    """:class:`callstate.traffic.Choices` drawn from hypothesis."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def flag(self) -> bool:
        return self.draw(st.booleans())


@st.composite
def call_histories(draw: st.DrawFn) -> tuple[str, list[Event]]:
    """A call SID and the distinct events (at least one) of one realistic call history."""
    choices = _DrawChoices(draw)
    call_sid = sid(choices, "CA")
    return call_sid, call_history(choices, call_sid)


def redelivered(event: Event, attempt: int = 1) -> Event:
    """Another delivery of the same request: equal content, different delivery metadata."""
    return Event.create(
        event.kind,
        event.params,
        source=event.source,
        received_at=1_780_000_000.0 + attempt,
        idempotency_token=f"retry-{attempt}",
    )


def shuffled_with_duplicates(events: Sequence[Event]) -> st.SearchStrategy[list[Event]]:
    """``events`` in any order, some of them delivered more than once."""
    base = list(events)
    if not base:
        return st.just([])
    extra = st.lists(st.tuples(st.sampled_from(base), st.integers(1, 3)), max_size=len(base) + 2)
    return extra.flatmap(
        lambda repeats: st.permutations(base + [redelivered(event, n) for event, n in repeats])
    )
