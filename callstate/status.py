"""The status vocabulary: Twilio's call and recording statuses and how they rank.

Stated once here and derived everywhere else: the reducer ranks events with it, the store names
one index per status with it (and the publish script reads each status from its key's name), and
the read API and the tests draw their lists from it (docs/contracts.md, "Reconciliation rules").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: Call status rank. Unknown or missing statuses rank below ``queued`` (see :data:`UNKNOWN_RANK`)
#: and never decide a call's status.
CALL_STATUS_RANK: Final[Mapping[str, int]] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "failed": 4,
    "no-answer": 4,
    "canceled": 4,
}

#: The rank of a call status Twilio may add one day, or of an event that carries none.
UNKNOWN_RANK: Final = -1

#: The statuses after which a call never changes again (``final`` is true).
TERMINAL_STATUSES: Final = frozenset(
    s for s, rank in CALL_STATUS_RANK.items() if rank == max(CALL_STATUS_RANK.values())
)

#: How the store names the status of a call that has none yet (known only from recordings).
NO_STATUS: Final = "none"

#: Every status a call can be published under, in rank order, :data:`NO_STATUS` last.
PUBLISHED_STATUSES: Final = (*CALL_STATUS_RANK, NO_STATUS)

#: Recording status rank: ``in-progress`` < ``completed`` | ``absent`` | ``failed``; anything else
#: (REST-only values such as ``paused``, or a missing status) ranks below them.
RECORDING_STATUS_RANK: Final[Mapping[str, int]] = {
    "in-progress": 1,
    "completed": 2,
    "absent": 2,
    "failed": 2,
}
