"""The job every peer design enqueues, and the RQ baselines run: it does nothing."""

from __future__ import annotations

from typing import Any

#: Dotted path the peers enqueue (RQ imports it only in the worker).
NOOP = "bench.peers.noop.noop"

#: The queue the peer designs and the RQ baselines use (callstate uses its own).
QUEUE = "bench"


def noop(*args: Any, **kwargs: Any) -> None:
    """Accept any arguments and return nothing: the cost measured is RQ's alone."""
