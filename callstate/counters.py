"""Deployment-wide counters: one Redis hash that every web and worker process adds to.

``GET /metrics`` on any web process answers for the whole deployment (README.md, "Monitoring"), so the
counters live in Redis, in the hash :data:`callstate.keys.METRICS`, one field per labelled value
(the names below). Every process adds its counts with ``HINCRBY`` inside writes it makes anyway,
never in a round trip of its own per callback or per event:

* the web process counts in memory (:class:`Tally`) and each group commit's MULTI/EXEC carries
  what was counted since the previous one (:func:`callstate.jobqueue.enqueue_batch`). What no
  batch carried for a second (refusals arrive without any enqueue; the 204s of the last batch) is
  written by the web process's flusher, at most once a second;
* a worker job adds its counts to its last pipeline (the publish step), or sends them alone when
  it published nothing;
* the sweep adds its REST outcomes with its last write.

Values are non-negative integers. A field this version does not know is ignored by readers
(:mod:`callstate.metrics`), so fields can be added without breaking an older reader.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from redis.client import Pipeline

from callstate import keys

#: The callback endpoints, by the label ``endpoint`` of ``callstate_callbacks_total``.
ENDPOINTS: Final = {"call": "call-status", "recording": "recording-status"}

#: Upper bounds (seconds) of the lag histogram's buckets, from the callback's acceptance to its
#: call's state being written. With workers keeping up the lag is tens of milliseconds
#: (bench/RESULTS.md, "Workers"), so the fine buckets sit there; the coarse ones show a backlog
#: (workers down or behind) building up.
LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: The histogram's bucket fields: one per bound of :data:`LAG_BUCKETS`, then ``+Inf``.
LAG_FIELDS: Final = (*(f"lag_bucket:{bound}" for bound in LAG_BUCKETS), "lag_bucket:+Inf")

#: Field of the lag histogram's sum, in whole microseconds (HINCRBY takes integers only).
LAG_SUM: Final = "lag_sum_us"


def callback_field(endpoint: str, code: int) -> str:
    """Callbacks answered ``code`` on ``endpoint`` (``call-status`` or ``recording-status``)."""
    return f"callbacks:{endpoint}:{code}"


def signature_field(reason: str) -> str:
    """Callbacks refused because of their signature, by ``reason`` (see
    :attr:`callstate.errors.InvalidSignature.code`)."""
    return f"signature_failures:{reason}"


def event_field(result: str) -> str:
    """Events a worker stored: ``new``, or ``duplicate`` (already in the call's event set)."""
    return f"events:{result}"


def state_change_field(status: str) -> str:
    """Changes of a call's reconciled state, by the status after the change (``none`` for null)."""
    return f"state_changes:{status}"


def sweep_field(outcome: str) -> str:
    """The sweep's REST requests, by ``outcome`` (:data:`callstate.metrics.SWEEP_OUTCOMES`)."""
    return f"sweep_requests:{outcome}"


def lag_field(seconds: float) -> str:
    """The histogram bucket of a lag of ``seconds``: the first bound at or above it, else ``+Inf``."""
    return LAG_FIELDS[bisect.bisect_left(LAG_BUCKETS, seconds)]


def add_lags(counts: dict[str, int], lags: list[float]) -> None:
    """Add the observations ``lags`` (seconds; negative ones, from clock skew between machines,
    count as 0) to ``counts``: one bucket field each, and their sum."""
    total = 0
    for observed in lags:
        lag = max(observed, 0.0)
        field = lag_field(lag)
        counts[field] = counts.get(field, 0) + 1
        total += round(lag * 1_000_000)
    if lags:
        counts[LAG_SUM] = counts.get(LAG_SUM, 0) + total


def hincrby_all(pipe: Pipeline, counts: Mapping[str, int]) -> None:
    """Queue one ``HINCRBY`` of :data:`callstate.keys.METRICS` per non-zero count on ``pipe``."""
    for field, amount in counts.items():
        if amount:
            pipe.hincrby(keys.METRICS, field, amount)


class Tally:
    """Counts of one process, kept in memory until a write it makes anyway carries them.

    :meth:`add` is meant for one thread (the web process's event loop) and costs a dict update.
    :meth:`take` and :meth:`give_back` may run on other threads (the group commit writes on its
    own): they work on a copy of the totals, taken in one C call, so no count is lost or written
    twice. A write that fails gives its counts back, and the next write carries them; a write
    that reached Redis but whose answer was lost counts them twice (at least once, not exactly).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._totals: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._lock = threading.Lock()
        self._clock = clock
        #: When :meth:`take` last ran (``clock`` time); never, at first.
        self.taken_at = float("-inf")

    def add(self, field: str, amount: int = 1) -> None:
        """Count ``amount`` more for ``field``."""
        totals = self._totals
        totals[field] = totals.get(field, 0) + amount

    def take(self, older_than: float = 0.0) -> dict[str, int]:
        """What was counted since the previous take; the caller writes it or gives it back.
        Nothing if the previous take is less than ``older_than`` seconds old."""
        with self._lock:
            if older_than and self._clock() - self.taken_at < older_than:
                return {}
            # dict.copy() runs without releasing the GIL: add() on the event loop cannot
            # interleave with it.
            totals = self._totals.copy()
            written = self._written
            delta = {field: n - written.get(field, 0) for field, n in totals.items()}
            self._written = totals
            self.taken_at = self._clock()
        return {field: n for field, n in delta.items() if n}

    def give_back(self, counts: Mapping[str, int]) -> None:
        """Undo a :meth:`take` whose write failed: the next take returns ``counts`` again."""
        with self._lock:
            for field, amount in counts.items():
                self._written[field] -= amount

    def due(self, interval: float) -> bool:
        """Something is counted but unwritten, and no take ran for ``interval`` seconds."""
        return self._clock() - self.taken_at >= interval and self._totals != self._written
