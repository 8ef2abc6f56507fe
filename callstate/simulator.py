"""``callstate simulate``: send realistic, signed Twilio callbacks to a deployment, then read back.

The I/O shell around :mod:`callstate.simulation`: an asyncio HTTP client (``httpx2``) sends the
plan's deliveries with at most ``concurrency`` requests in flight, starting one every ``1 / rate``
seconds (open loop: a slow target makes requests overlap, not the schedule slip), retrying as Twilio
does, with a progress bar on a terminal. ``--verify`` then reads every call through the read API
until it shows an expected state or the deadline passes.

Retry pacing, as Twilio's webhook defaults (docs/twilio.md, "Ordering, duplicates and retries":
connection overrides ``rc=1``, ``tt=15000``): a failed request is tried again once, all attempts
within 15 s. A connection error is retried at once; an answer of 5xx (which Twilio may not retry by
default) after its ``Retry-After`` when that fits in the 15 s. A 4xx is final: a 403 means the
target refused the signature, never success.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TextIO

import httpx2 as httpx
import orjson
from tqdm import tqdm

from callstate.simulation import Delivery, Expected, Plan, Signer, Tally, mismatch

#: Twilio's defaults: 5 s to connect (``ct``), 15 s for all attempts together (``tt``).
CONNECT_TIMEOUT: Final = 5.0
TOTAL_TIMEOUT: Final = 15.0
#: Pause before retrying a 5xx that names no Retry-After.
_DEFAULT_PAUSE: Final = 1.0
#: Between two read-back rounds of the calls that do not match yet.
_POLL_PAUSE: Final = 0.5


class ReadRefused(Exception):
    """The read API refused ``--verify``'s token (or answered something unusable)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send: the public base URL the signatures cover, and how to sign."""

    base_url: str
    signer: Signer
    concurrency: int = 32
    rate: float | None = None
    retries: int = 1


def now_utc() -> datetime:
    """The start of a simulation's calls: this second."""
    return datetime.now(UTC).replace(microsecond=0)


def client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT)
    return httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=False, trust_env=False)


async def _deliver(http: httpx.AsyncClient, target: Target, delivery: Delivery, tally: Tally) -> None:
    method, url, body, headers = delivery.request(target.base_url, target.signer)
    clock = asyncio.get_running_loop().time
    deadline = clock() + TOTAL_TIMEOUT
    answer = "not sent"
    for attempt in range(target.retries + 1):
        started = clock()
        pause = 0.0
        try:
            response = await http.request(
                method, url, content=body, headers=headers, timeout=max(0.1, deadline - started)
            )
            answer = str(response.status_code)
            pause = _retry_after(response.headers.get("retry-after"))
        except httpx.TimeoutException:
            answer = "timeout"
        except httpx.TransportError as exc:
            answer = type(exc).__name__
        tally.answer(answer, clock() - started)
        final = answer.startswith(("2", "3", "4"))
        if final or attempt == target.retries or clock() + pause >= deadline:
            break
        await asyncio.sleep(pause)
    tally.done(delivery, answer)


def _retry_after(value: str | None) -> float:
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return _DEFAULT_PAUSE


async def send(
    plan: Plan,
    target: Target,
    *,
    http: httpx.AsyncClient,
    progress: bool = False,
    tally: Tally | None = None,
) -> Tally:
    """Send every delivery of ``plan``; return what the target answered."""
    tally = tally if tally is not None else Tally()
    slots = asyncio.Semaphore(target.concurrency)
    bar = tqdm(total=len(plan.deliveries), unit="callback", file=sys.stderr, disable=not progress)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    tasks: set[asyncio.Task[None]] = set()

    async def one(delivery: Delivery) -> None:
        try:
            await _deliver(http, target, delivery, tally)
        finally:
            slots.release()
            bar.update()

    try:
        for index, delivery in enumerate(plan.deliveries):
            if target.rate:
                await asyncio.sleep(max(0.0, begun + index / target.rate - loop.time()))
            await slots.acquire()
            task = asyncio.create_task(one(delivery))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    finally:
        bar.close()
    return tally


async def read_back(
    expected: Sequence[Expected],
    *,
    http: httpx.AsyncClient,
    base_url: str,
    read_token: str,
    timeout: float,
    concurrency: int = 16,
) -> dict[str, str]:
    """Read every checkable call until it matches; return the ones that still do not, with why.

    Raises :class:`ReadRefused` when the read API refuses the token (401/403), so a wrong
    ``SECRET_KEY`` is one clear error rather than every call "not matching".
    """
    pending = {e.call.sid: e for e in expected if e.candidates}
    reasons: dict[str, str] = {}
    slots = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {read_token}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def check(sid: str, wanted: Expected) -> None:
        async with slots:
            try:
                response = await http.get(f"{base_url}/calls/{sid}", headers=headers)
            except httpx.TransportError as exc:
                reasons[sid] = f"read failed: {type(exc).__name__}"
                return
        if response.status_code in (401, 403):
            raise ReadRefused(f"the read API answered {response.status_code}: {response.text.strip()[:200]}")
        if response.status_code not in (200, 404):
            reasons[sid] = f"read API answered {response.status_code}"
            return
        state = orjson.loads(response.content) if response.status_code == 200 else None
        reason = mismatch(wanted, state)
        if reason is None:
            del pending[sid]
        else:
            reasons[sid] = reason

    while pending:
        await asyncio.gather(*(check(sid, wanted) for sid, wanted in list(pending.items())))
        if not pending or loop.time() >= deadline:
            break
        await asyncio.sleep(_POLL_PAUSE)
    return {sid: reasons[sid] for sid in pending}


def report(
    plan: Plan, tally: Tally, seconds: float, out: TextIO, signed_with: str = "TWILIO_AUTH_TOKEN"
) -> None:
    """The summary: what was sent, and the answers by status code. ``signed_with`` names what the
    signatures were made with (a setting, never its value), for the hint on 403s."""
    sent = len(plan.deliveries)
    rate = sent / seconds if seconds > 0 else 0.0
    print(
        f"sent {sent:,} callbacks ({plan.duplicates:,} duplicate deliveries) for {len(plan.calls):,} calls "
        f"in {seconds:.1f} s ({rate:,.0f}/s); slowest answer {tally.slowest:.2f} s",
        file=out,
    )
    answers = ", ".join(f"{answer}: {count:,}" for answer, count in sorted(tally.answers.items()))
    print(f"answers by status (every attempt): {answers}", file=out)
    refused = tally.refused()
    if refused:
        listed = ", ".join(f"{answer}: {count:,}" for answer, count in sorted(refused.items()))
        print(f"NOT acknowledged after retries: {len(tally.failed):,} callbacks ({listed})", file=out)
        if "403" in refused:
            print(
                f"  403: the target refused the signatures: is {signed_with} the web process's, and "
                "is --url the public URL it sees (PUBLIC_BASE_URL)?",
                file=out,
            )


def elapsed(clock: Callable[[], float] = time.monotonic) -> Callable[[], float]:
    """A stopwatch: call the result for the seconds since this call."""
    started = clock()
    return lambda: clock() - started
