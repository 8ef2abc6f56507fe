"""The deployment's figures: counters and gauges read from Redis, for ``GET /metrics``,
``callstate stats`` and dashboards alike.

:func:`read` is the I/O shell: a few round trips, whatever the traffic (the store's counts by
status through :class:`callstate.reader.Reader`, the counters and the queue's registries in one
pipeline, the oldest queued job's enqueue time, and the workers' counters when the store is another
Redis). :func:`figures_from` is the pure part: Redis values in, :class:`Figures` out, so a
dashboard holding the same values computes the same figures. The counters are written by
:mod:`callstate.counters`; what each figure means is in README.md, "Monitoring".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from callstate import keys
from callstate.counters import LAG_BUCKETS, LAG_FIELDS, LAG_SUM
from callstate.reader import Reader
from callstate.status import PUBLISHED_STATUSES

#: Why a callback's signature was refused: the values of ``InvalidSignature.code``. Always shown
#: (zero until seen), so that an alert on their rate has a series from the start.
SIGNATURE_REASONS: Final = (
    "missing",
    "malformed",
    "undecodable",
    "unknown_key",
    "unknown_algorithm",
    "mismatch",
)

#: What became of each REST request of the sweep.
SWEEP_OUTCOMES: Final = (
    "final",  # Twilio says the call ended: applied as an event
    "still_active",  # Twilio says it has not ended yet
    "not_found",  # 404
    "rate_limited",  # 429: the sweep stops until the next one
    "unavailable",  # 5xx, timeout, refused connection: the sweep stops
    "credentials",  # 401/403: the sweep stops
    "failed",  # anything else about this call (an unreadable answer)
)

#: What became of each event a worker got: stored, already known (a redelivery, a re-split that
#: lost), or refused because its call already held CALLSTATE_MAX_EVENTS_PER_CALL events.
EVENT_RESULTS: Final = ("new", "duplicate", "over_cap")

#: The states of RQ jobs shown by ``callstate_queue_jobs``.
QUEUE_STATES: Final = ("queued", "started", "scheduled", "failed")


@dataclass(frozen=True, slots=True)
class Figures:
    """Every figure of ``GET /metrics``; counters since the deployment's Redis was new."""

    #: (endpoint, HTTP status as text) -> callbacks answered so.
    callbacks: Mapping[tuple[str, str], int]
    signature_failures: Mapping[str, int]
    events: Mapping[str, int]
    state_changes: Mapping[str, int]
    sweep_requests: Mapping[str, int]
    #: Observations per bucket of :data:`LAG_BUCKETS`, then above the last (not cumulative).
    lag_buckets: tuple[int, ...]
    #: Sum of the observed lags, seconds.
    lag_sum: float
    #: Calls in the store by current status (``none``: no status yet).
    calls: Mapping[str, int]
    stuck_calls: int
    queue_jobs: Mapping[str, int]
    #: Seconds the oldest queued job has waited; 0 when none waits.
    queue_oldest_age: float
    #: What each Redis (``queue``: REDIS_URL, ``store``: STORE_REDIS_URL, the same server unless
    #: set) says of its memory; a Redis that forbids INFO is left out.
    redis_memory: Mapping[str, RedisMemory] = field(default_factory=dict)

    @property
    def lag_count(self) -> int:
        return sum(self.lag_buckets)

    def lag_quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile of the lag (``inf`` above the
        last bound); ``None`` before any observation."""
        rank = q * self.lag_count
        seen = 0
        for bound, count in zip((*LAG_BUCKETS, float("inf")), self.lag_buckets, strict=True):
            seen += count
            if count and seen >= rank:
                return bound
        return None


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """What one Redis says of its memory (``INFO memory``)."""

    used: int
    #: ``maxmemory``; 0 when there is none.
    limit: int
    policy: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> RedisMemory:
        """From ``INFO memory`` as redis-py parses it; absent fields count as 0 and ``noeviction``."""
        return cls(
            int(info.get("used_memory", 0)),
            int(info.get("maxmemory", 0)),
            str(info.get("maxmemory_policy", "noeviction")),
        )

    @property
    def full(self) -> bool:
        """Writes are refused for lack of memory: ``maxmemory`` reached under ``noeviction``, so
        every callback is answered 503 until memory is freed (README, "Failure modes")."""
        return bool(self.limit) and self.used >= self.limit and self.policy == "noeviction"

    def reason(self) -> str:
        """Why writes are refused, for ``/readyz`` and logs (meaningful when :attr:`full`)."""
        return (
            f"Redis is full (used_memory {self.used} >= maxmemory {self.limit}, noeviction): "
            "writes are refused"
        )


def redis_memory(redis: Redis) -> RedisMemory | None:
    """``redis``'s memory, one ``INFO memory`` round trip; ``None`` where INFO is forbidden (some
    managed services rename it). Raises ``RedisError`` if Redis cannot be reached."""
    try:
        return RedisMemory.from_info(redis.info("memory"))
    except ResponseError:
        return None


@dataclass(frozen=True, slots=True)
class Gauges:
    """What :func:`read` reads besides the counters hash."""

    calls: Mapping[str, int]
    stuck_calls: int
    queue_jobs: Mapping[str, int]
    queue_oldest_age: float
    redis_memory: Mapping[str, RedisMemory] = field(default_factory=dict)


def figures_from(
    counters: Mapping[bytes, bytes] | Mapping[str, str] | Mapping[str, int], gauges: Gauges
) -> Figures:
    """The figures of the counters hash (:data:`callstate.keys.METRICS`, as ``HGETALL`` returns
    it, or as :func:`sum_counters` adds several up) and ``gauges``. Fields it does not know, and
    values that are not integers, are skipped."""
    callbacks: dict[tuple[str, str], int] = {}
    families: dict[str, dict[str, int]] = {
        "signature_failures": dict.fromkeys(SIGNATURE_REASONS, 0),
        "events": dict.fromkeys(EVENT_RESULTS, 0),
        "state_changes": dict.fromkeys(PUBLISHED_STATUSES, 0),
        "sweep_requests": dict.fromkeys(SWEEP_OUTCOMES, 0),
    }
    buckets = {field: index for index, field in enumerate(LAG_FIELDS)}
    lag_buckets = [0] * len(LAG_FIELDS)
    lag_sum_us = 0
    for raw_field, raw_value in counters.items():
        field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
        try:
            value = int(raw_value)
        except ValueError:
            continue
        family, _, label = field.partition(":")
        if field == LAG_SUM:
            lag_sum_us = value
        elif field in buckets:
            lag_buckets[buckets[field]] = value
        elif family == "callbacks" and label.count(":") == 1:
            endpoint, _, code = label.partition(":")
            callbacks[(endpoint, code)] = value
        elif family in families and label:
            families[family][label] = value
    return Figures(
        callbacks=callbacks,
        signature_failures=families["signature_failures"],
        events=families["events"],
        state_changes=families["state_changes"],
        sweep_requests=families["sweep_requests"],
        lag_buckets=tuple(lag_buckets),
        lag_sum=lag_sum_us / 1_000_000,
        calls=gauges.calls,
        stuck_calls=gauges.stuck_calls,
        queue_jobs=gauges.queue_jobs,
        queue_oldest_age=gauges.queue_oldest_age,
        redis_memory=gauges.redis_memory,
    )


def job_age(enqueued_at: bytes | str | None, now: float) -> float:
    """Seconds since an RQ job's ``enqueued_at`` (RQ's UTC text); 0 when unknown or in the future."""
    if not enqueued_at:
        return 0.0
    text = enqueued_at.decode() if isinstance(enqueued_at, bytes) else enqueued_at
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    return max(0.0, now - moment.timestamp())


def sum_counters(*hashes: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, int]:
    """The counters hashes of several Redis servers added up, field by field (the web processes
    write theirs where they queue jobs, the workers where the store is; README.md, "Monitoring").
    Values that are not integers are skipped."""
    total: dict[str, int] = {}
    for counters in hashes:
        for raw_field, raw_value in counters.items():
            field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            try:
                total[field] = total.get(field, 0) + int(raw_value)
            except ValueError:
                continue
    return total


def read(queue: Redis, store: Reader, *, queue_name: str) -> Figures:
    """The figures as Redis holds them now (``store.clock()``): the queue's gauges and the web
    processes' counters from ``queue`` (the ``REDIS_URL`` client), the store's counts and the
    workers' counters through ``store`` (the two are read once when they are the same client).
    A call is stuck as ``store`` counts it (what the sweep asks about)."""
    now = store.clock()
    counts = store.counts()
    queue_key = Queue.redis_queue_namespace_prefix + queue_name
    registries = {
        state: registry.key_template.format(queue_name)
        for state, registry in (
            ("started", StartedJobRegistry),
            ("scheduled", ScheduledJobRegistry),
            ("failed", FailedJobRegistry),
        )
    }
    pipe = queue.pipeline(transaction=False)
    pipe.hgetall(keys.METRICS)
    pipe.llen(queue_key)
    for key in registries.values():
        pipe.zcard(key)
    pipe.lindex(queue_key, 0)
    web_counters, queued, *registered, oldest = pipe.execute()
    worker_counters: dict[bytes, bytes] = {}
    if store.redis is not queue:
        worker_counters = cast(dict[bytes, bytes], store.redis.hgetall(keys.METRICS))
    # The oldest job is first: RQ pushes jobs at the tail and takes them from the head.
    age = 0.0 if oldest is None else job_age(queue.hget(Job.key_for(oldest.decode()), "enqueued_at"), now)
    memory = {"queue": redis_memory(queue)}
    memory["store"] = memory["queue"] if store.redis is queue else _store_memory(store)
    gauges = Gauges(
        calls=counts.by_status,
        stuck_calls=counts.stuck,
        queue_jobs={"queued": int(queued), **dict(zip(registries, map(int, registered), strict=True))},
        queue_oldest_age=age,
        redis_memory={role: known for role, known in memory.items() if known is not None},
    )
    return figures_from(sum_counters(web_counters, worker_counters), gauges)


def _store_memory(store: Reader) -> RedisMemory | None:
    """The store's memory: on a Redis Cluster, the fullest master's (any full master refuses the
    writes of its calls), summed ``used`` and ``limit`` would hide it."""
    if not isinstance(store.redis, RedisCluster):
        return redis_memory(store.redis)
    try:
        by_node: dict[str, Any] = store.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
    except ResponseError:
        return None
    # One master answers with its INFO itself, several with {node name: INFO}.
    infos = [by_node] if "used_memory" in by_node else list(by_node.values())
    masters = [RedisMemory.from_info(info) for info in infos]
    return max(masters, key=lambda m: (m.full, m.used / m.limit if m.limit else 0.0, m.used), default=None)
