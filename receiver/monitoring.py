"""The web process's part of the deployment's metrics: counting callbacks, writing the counts,
answering ``GET /metrics``.

Counting costs a callback one dict update (:class:`~callstate.counters.Tally`). The counts reach
Redis without a round trip of their own while callbacks flow: a group commit's MULTI/EXEC carries
them (:func:`counting_writer`), at most every :data:`CARRY_INTERVAL` seconds so that the extra
HINCRBYs cost the same at any rate. What no batch carried for :data:`FLUSH_INTERVAL` seconds
(refusals come without any enqueue, and the 204s of the last batch are counted after it was
written) goes in one pipeline of its own (:func:`flush_counts_every`): at most one round trip a
second per process, and none while batches carry everything.

``GET /metrics`` answers for the whole deployment from Redis (:func:`callstate.metrics.read`),
behind ``Authorization: Bearer <METRICS_TOKEN>``; without the setting it does not exist (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from callstate import metrics
from callstate.counters import Tally, hincrby_all
from callstate.errors import NotFound, Unauthorized
from callstate.exposition import CONTENT_TYPE, prometheus_text
from callstate.jobqueue import FAILURE_TTL, enqueue_batch
from callstate.logs import log_event
from receiver.resources import Resources

logger = logging.getLogger("callstate.web")

#: Seconds between two batches that carry counts: each HINCRBY a batch carries makes it a little
#: dearer, so counts ride along at most this often, whatever the rate.
CARRY_INTERVAL: Final = 0.1
#: Counts no batch carried for this many seconds are written on their own.
FLUSH_INTERVAL: Final = 1.0


def counting_writer(
    tally: Tally, queue: Queue, timeout: int, failed_ttl: int = FAILURE_TTL
) -> Callable[[Sequence[dict[str, Any]]], int]:
    """The group commit's writer (:data:`receiver.groupcommit.Writer`): enqueue a batch, and add
    the counts not yet written to its MULTI/EXEC when none went for :data:`CARRY_INTERVAL`.
    ``failed_ttl``: how long RQ keeps a job that failed for good (callstate.jobqueue.failure_ttl)."""

    def write(items: Sequence[dict[str, Any]]) -> int:
        counts = tally.take(older_than=CARRY_INTERVAL)
        try:
            return enqueue_batch(queue, items, timeout=timeout, counts=counts, failed_ttl=failed_ttl)
        except BaseException:
            tally.give_back(counts)
            raise

    return write


def write_counts(tally: Tally, redis: Redis) -> None:
    """Write what is counted and unwritten, in one round trip (nothing when there is nothing)."""
    counts = tally.take()
    if not counts:
        return
    try:
        with redis.pipeline(transaction=False) as pipe:
            hincrby_all(pipe, counts)
            pipe.execute()
    except BaseException:
        tally.give_back(counts)
        raise


async def flush_counts_every(tally: Tally, redis: Redis, interval: float = FLUSH_INTERVAL) -> None:
    """Forever: write the counts that no batch carried for ``interval`` seconds (on a thread)."""
    while True:
        await asyncio.sleep(interval / 4)
        if tally.due(interval):
            try:
                await run_in_threadpool(write_counts, tally, redis)
            except RedisError as exc:  # kept in memory: the next write carries them
                log_event(logger, "counts_not_written", logging.WARNING, error=f"{type(exc).__name__}: {exc}")


async def final_counts(tally: Tally, redis: Redis) -> None:
    """At shutdown: write what is left, if Redis takes it (the counts are lost otherwise)."""
    with contextlib.suppress(RedisError):
        await run_in_threadpool(write_counts, tally, redis)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the deployment's figures in Prometheus's text format."""
    resources = Resources.of(request)
    settings = resources.settings
    if not settings.metrics_token:
        raise NotFound("not found")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized(
            "metrics need Authorization: Bearer <METRICS_TOKEN>", {"WWW-Authenticate": "Bearer"}
        )
    read = partial(metrics.read, resources.redis, resources.reader, queue_name=settings.queue_name)
    figures = await run_in_threadpool(read)
    return Response(prometheus_text(figures), media_type=CONTENT_TYPE)
