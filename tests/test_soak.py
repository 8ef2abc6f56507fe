"""The chaos soak, short: a minute of traffic through every fault (``make soak`` runs ten)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import soak


@pytest.mark.timeout(300)
def test_nothing_acknowledged_is_lost_through_every_fault(tmp_path: Path) -> None:
    """Worker and web SIGKILLed, Redis SIGKILLed, paused 8 s, full, and 2 ms away: every callback
    answered 2xx is in the store, no 5xx but 503, no answer past 5 s, memory bounded, and after
    each fault callbacks are acknowledged again."""
    outcome = soak.run(60, 30, seed=3, directory=tmp_path, log=lambda line: None)
    assert outcome.problems() == [], outcome.summary()
    assert outcome.checked_calls > 0
    # The faults were real: Redis's outages were answered 503, and each fault healed.
    assert outcome.tally.answers["503"] > 0
    for fault in outcome.faults:
        assert any(a.at >= fault.ended and a.answer.startswith("2") for a in outcome.tally.attempts), (
            fault.name
        )
