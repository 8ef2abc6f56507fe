"""Pacing of the group commit: when the next batch may be written, as a pure function of the clock.

A job costs a worker RQ's bookkeeping (tens of Redis commands) whatever it carries, so one job
per callback under load is more than the workers can run and the lag grows without bound
(bench/RESULTS.md, "How it got there"). So writes are spaced: ``min_interval`` apart normally (a
lone callback never waits, since the previous write is long past), and, while the writer reports
that more than :data:`BEHIND` jobs are waiting in the queue (the workers are behind), up to
``behind_interval`` apart or until ``behind_batch`` items are in hand. Waiting then costs no
end-to-end lag: the workers would not have reached the job sooner. A full batch (``max_batch``
items) never waits.

:class:`Pacing` does no I/O and reads no clock: the caller passes ``now`` (the group commit passes
its event loop's time), so the policy is tested with plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: More jobs than this waiting in the queue means the workers are behind.
BEHIND: Final = 2


@dataclass(frozen=True, slots=True)
class Pacing:
    """The spacing policy of one group commit. Times are seconds on one monotonic clock.

    ``behind_interval`` is raised to ``min_interval`` and ``behind_batch`` lowered to ``max_batch``
    if given out of order, so that being behind never makes a batch go sooner or wait for more
    items than a batch may hold.
    """

    max_batch: int = 256
    min_interval: float = 0.0
    behind_interval: float = 0.0
    behind_batch: int = 16

    def __post_init__(self) -> None:
        # Frozen dataclass: the normalised values are set once, here.
        object.__setattr__(self, "behind_interval", max(self.behind_interval, self.min_interval))
        object.__setattr__(self, "behind_batch", min(self.behind_batch, self.max_batch))

    def delay(self, now: float, last_write: float, pending: int, backlog: int) -> float:
        """Seconds to wait before writing a batch of the ``pending`` items in hand; 0.0 means now.

        ``last_write`` is when the previous batch went (``-inf`` if none has); ``backlog`` is how
        many jobs the last write reported waiting in the queue. The answer only shrinks as ``now``
        grows and, for ``last_write <= now``, is never more than ``behind_interval``. The caller
        asks again when an item arrives, since that can end the wait early.
        """
        if pending >= self.max_batch:
            return 0.0
        if backlog > BEHIND and pending < self.behind_batch:
            interval = self.behind_interval
        else:
            interval = self.min_interval
        # interval - elapsed, not last_write + interval - now: exact bounds in floating point too.
        return max(0.0, interval - (now - last_write))
