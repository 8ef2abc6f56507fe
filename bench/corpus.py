"""Pre-signed callbacks for the load generators: one file, one request a line.

A line is ``path<TAB>X-Twilio-Signature<TAB>form body``; both load generators (wrk's
``bench/wrk/callbacks.lua`` and :mod:`bench.loadgen`) send it as a POST with ``Host:`` :data:`HOST`,
and the signature is computed (by the official ``twilio`` package, through ``tests/twiliosign.py``)
for :data:`SIGNED_BASE` plus the path: the URL every design sees, whatever port it listens on.

Two corpora:

* :func:`progress_corpus`: calls firing ``initiated``, ``ringing``, ``in-progress``, ``completed``
  (``SequenceNumber`` 0 to 3) in order, with Twilio's full parameter set
  (:func:`callstate.traffic.answered_call`: 28 parameters, 31 on the terminal callback, a few more
  now and then); every line is a distinct (CallSid, SequenceNumber). Calls are interleaved in
  blocks so that a call's next event comes a block later, as calls overlap in production.
* :func:`history_corpus`: the realistic histories of :mod:`callstate.traffic` (recordings, lost
  callbacks, child legs...), out of order and with some callbacks delivered twice, for the workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

from callstate.event import Event, Kind
from callstate.traffic import PATHS, answered_call, arrival_order, make_history
from tests.twiliosign import TOKEN, signature

#: The Host header every request carries, and the URL base its signature covers.
HOST: Final = "127.0.0.1"
SIGNED_BASE: Final = f"http://{HOST}"
#: The auth token the designs are started with.
AUTH_TOKEN: Final = TOKEN

_PROGRESS: Final = 4  # events of an answered call that subscribed to all of them


@dataclass(frozen=True, slots=True)
class Corpus:
    """A written corpus: its file, its line count, and what the workers should end up storing."""

    path: Path
    requests: int
    mean_body_bytes: float
    #: CallSid -> number of distinct events (store keys) the store must hold for it.
    expected_events: dict[str, int] = field(default_factory=dict)
    #: CallSids whose history has a terminal call event and a recording (for memory per call).
    final_with_recording: list[str] = field(default_factory=list)


def _line(kind: Kind, params: Sequence[tuple[str, str]]) -> str:
    path = PATHS[kind]
    return f"{path}\t{signature(SIGNED_BASE + path, params)}\t{urlencode(params)}\n"


def progress_corpus(path: Path, requests: int, seed: int, block: int = 256) -> Corpus:
    """``requests`` distinct progress callbacks (``requests / 4`` calls), interleaved by blocks of
    ``block`` calls: the calls of a block send their event 0, then their event 1, and so on."""
    rng = random.Random(seed)
    calls = -(-requests // _PROGRESS)
    written = 0
    body_bytes = 0
    with path.open("w") as out:
        for first in range(0, calls, block):
            histories = [
                answered_call(rng, f"CA{rng.getrandbits(128):032x}") for _ in range(min(block, calls - first))
            ]
            for step in range(_PROGRESS):
                for history in histories:
                    if written == requests:
                        break
                    line = _line("call", history[step].params)
                    body_bytes += len(line) - line.rindex("\t") - 2
                    out.write(line)
                    written += 1
    return Corpus(path, written, body_bytes / max(written, 1))


def history_corpus(path: Path, events: int, seed: int, duplicates: float = 0.1, window: int = 500) -> Corpus:
    """About ``events`` distinct callbacks of realistic histories, plus a ``duplicates`` share of
    redeliveries, out of order. REST-sweep observations are left out: they do not come over HTTP."""
    rng = random.Random(seed)
    histories = twilio_histories(rng, events)
    stream = arrival_order(rng, histories, window, duplicates)
    _write(path, stream)
    expected: dict[str, int] = {}
    final_with_recording: list[str] = []
    for history in histories:
        sid = history[0].call_sid
        if sid is None:
            continue
        expected[sid] = len({event.slot() for event in history})
        has_recording = any(event.kind == "recording" for event in history)
        has_end = any(event.kind == "call" and event.get("CallDuration") is not None for event in history)
        if has_recording and has_end:
            final_with_recording.append(sid)
    body_bytes = sum(len(urlencode(event.params)) for event in stream)
    return Corpus(path, len(stream), body_bytes / len(stream), expected, final_with_recording)


def twilio_histories(rng: random.Random, events: int) -> list[list[Event]]:
    """Realistic call histories (:func:`callstate.traffic.make_history`) of about ``events``
    callbacks in all, without the REST-sweep observations: what comes over HTTP."""
    histories: list[list[Event]] = []
    total = 0
    while total < events:
        history = [e for e in make_history(rng, f"CA{rng.getrandbits(128):032x}") if e.source == "twilio"]
        if history:
            histories.append(history)
            total += len(history)
    return histories


def _write(path: Path, events: Iterable[Event]) -> None:
    with path.open("w") as out:
        for event in events:
            out.write(_line(event.kind, event.params))
