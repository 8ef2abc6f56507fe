"""The deployment's figures: pure parsing of the counters, reading Redis, and the two renderings."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.cluster import RedisCluster
from rq.executions import Execution
from rq.registry import FailedJobRegistry

from callstate import keys
from callstate.counters import LAG_FIELDS, LAG_SUM, callback_field, event_field, signature_field
from callstate.exposition import human_text, prometheus_text
from callstate.jobqueue import APPLY_EVENTS, enqueue_batch, make_queue
from callstate.metrics import (
    SIGNATURE_REASONS,
    Figures,
    Gauges,
    RedisMemory,
    figures_from,
    job_age,
    read,
    sum_counters,
)
from callstate.reader import Reader
from callstate.status import PUBLISHED_STATUSES
from tests.rediscluster import RedisClusterServer
from tests.redisserver import RedisServer

NOW = 1_800_000_000.0
GAUGES = Gauges(
    calls={"completed": 2},
    stuck_calls=1,
    queue_jobs={"queued": 3},
    queue_oldest_age=4.5,
    redis_memory={
        "queue": RedisMemory(used=2_000_000, limit=25_000_000, policy="noeviction"),
        "store": RedisMemory(used=25_000_000, limit=25_000_000, policy="noeviction"),
    },
)


def figures(**counters: int) -> Figures:
    return figures_from({field: str(n) for field, n in counters.items()}, GAUGES)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus-client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


class TestFiguresFrom:
    def test_fields_become_labelled_figures(self) -> None:
        """Each field lands in its family under its label."""
        f = figures_from(
            {
                callback_field("call-status", 204).encode(): b"7",
                signature_field("mismatch").encode(): b"2",
                event_field("duplicate").encode(): b"1",
                b"state_changes:completed": b"3",
                b"sweep_requests:not_found": b"4",
            },
            GAUGES,
        )
        assert f.callbacks == {("call-status", "204"): 7}
        assert f.signature_failures["mismatch"] == 2
        assert f.events == {"new": 0, "duplicate": 1, "over_cap": 0}
        assert f.state_changes["completed"] == 3
        assert f.sweep_requests["not_found"] == 4
        assert f.calls == GAUGES.calls

    def test_known_labels_are_zero_until_counted(self) -> None:
        """An empty hash still shows every signature reason, status and outcome, at zero."""
        f = figures()
        assert f.signature_failures == dict.fromkeys(SIGNATURE_REASONS, 0)
        assert set(f.state_changes) == set(PUBLISHED_STATUSES)
        assert f.callbacks == {}
        assert f.lag_count == 0

    def test_unknown_fields_and_bad_values_are_skipped(self) -> None:
        """A field from a newer version, or a value that is not an integer, changes nothing."""
        f = figures_from({"future_family:x": "1", "events:new": "many", "callbacks:bad": "2"}, GAUGES)
        assert f == figures()

    def test_a_reason_outside_the_vocabulary_is_still_shown(self) -> None:
        """A new kind of signature failure is counted before readers learn its name."""
        assert figures(**{"signature_failures:unknown_key": 5}).signature_failures["unknown_key"] == 5

    def test_the_lag_histogram_is_read_per_bucket(self) -> None:
        """Bucket fields are per-bucket counts; the sum is in microseconds."""
        f = figures(**{LAG_FIELDS[0]: 2, LAG_FIELDS[-1]: 1, LAG_SUM: 1_500_000})
        assert f.lag_buckets[0] == 2
        assert f.lag_buckets[-1] == 1
        assert f.lag_count == 3
        assert f.lag_sum == 1.5


class TestLagQuantile:
    def test_a_quantile_is_its_buckets_upper_bound(self) -> None:
        """p50 of 3 fast and 1 slow observations is the fast bucket's bound; p99 the slow one's."""
        f = figures(**{"lag_bucket:0.01": 3, "lag_bucket:2.5": 1})
        assert f.lag_quantile(0.5) == 0.01
        assert f.lag_quantile(0.99) == 2.5

    def test_above_the_last_bound_is_infinite(self) -> None:
        """Observations past the last bound give an infinite quantile."""
        assert figures(**{"lag_bucket:+Inf": 1}).lag_quantile(0.5) == float("inf")

    def test_no_observations_no_quantile(self) -> None:
        """Before any event there is no quantile to show."""
        assert figures().lag_quantile(0.5) is None


class TestJobAge:
    def test_age_of_rqs_timestamp(self) -> None:
        """RQ writes enqueued_at as UTC with microseconds and a Z."""
        now = datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC).timestamp()
        assert job_age(b"2027-01-15T08:00:00.000000Z", now) == 30

    @pytest.mark.parametrize("raw", [None, b"", b"yesterday", "2099-01-01T00:00:00.000000Z"])
    def test_unknown_or_future_is_zero(self, raw: bytes | str | None) -> None:
        """No time, a time we cannot read, or one in the future: age 0."""
        assert job_age(raw, NOW) == 0


@contextmanager
def full(client: redis.Redis) -> Iterator[None]:
    """``client``'s Redis refusing writes for lack of memory (maxmemory 1, noeviction) meanwhile."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        yield
    finally:
        client.config_set("maxmemory", "0")


class TestRedisMemory:
    @pytest.mark.parametrize(
        ("used", "limit", "policy", "full"),
        [
            (100, 0, "noeviction", False),  # no maxmemory: never full
            (99, 100, "noeviction", False),
            (100, 100, "noeviction", True),
            (150, 100, "noeviction", True),
            (150, 100, "allkeys-lru", False),  # Redis evicts instead of refusing writes
        ],
    )
    def test_full_means_writes_are_refused(self, used: int, limit: int, policy: str, full: bool) -> None:
        assert RedisMemory(used, limit, policy).full is full

    def test_from_info(self) -> None:
        info = {"used_memory": 1234, "maxmemory": 5678, "maxmemory_policy": "volatile-lru", "other": "x"}
        assert RedisMemory.from_info(info) == RedisMemory(1234, 5678, "volatile-lru")


class TestRead:
    def test_gauges_and_counters_as_redis_holds_them(self, redis_client: redis.Redis) -> None:
        """Calls by status, stuck calls, jobs per state and the oldest job's age, with the
        counters hash: everything /metrics shows, read from one Redis."""
        now = datetime.now(UTC).timestamp()
        redis_client.zadd(keys.by_status("in-progress", 0), {"CA1": now, "CA2": now - 7200})
        redis_client.zadd(keys.by_status("completed", 0), {"CA3": now})
        redis_client.zadd(keys.active(0), {"CA1": now, "CA2": now - 7200})
        redis_client.hset(keys.METRICS, mapping={"events:new": 5, LAG_FIELDS[0]: 5})
        queue = make_queue(redis_client, "callstate")
        enqueue_batch(queue, [{"kind": "call"}])
        enqueue_batch(queue, [{"kind": "call"}])
        queue.enqueue_in(timedelta(hours=1), APPLY_EVENTS, [])
        failed = queue.enqueue_call(APPLY_EVENTS, args=([],))
        queue.remove(failed)
        FailedJobRegistry(queue=queue).add(failed, ttl=60, exc_string="boom")
        started = queue.dequeue_any([queue], None, connection=redis_client)
        assert started is not None
        with redis_client.pipeline() as pipe:
            Execution.create(started[0], ttl=60, pipeline=pipe)
            pipe.execute()

        f = read(
            redis_client,
            Reader(redis_client, stuck_after=1800, clock=lambda: now + 60),
            queue_name="callstate",
        )

        assert f.calls == {**dict.fromkeys(PUBLISHED_STATUSES, 0), "in-progress": 2, "completed": 1}
        assert f.stuck_calls == 1
        assert f.queue_jobs == {"queued": 1, "started": 1, "scheduled": 1, "failed": 1}
        [waiting] = queue.get_jobs()
        assert waiting.enqueued_at is not None
        assert f.queue_oldest_age == pytest.approx(now + 60 - waiting.enqueued_at.timestamp())
        assert f.events["new"] == 5
        assert f.lag_count == 5

    def test_an_empty_store_reads_as_zeros(self, redis_client: redis.Redis) -> None:
        """A new deployment has figures too: all zero."""
        f = read(redis_client, Reader(redis_client, clock=lambda: NOW), queue_name="callstate")
        memory = f.redis_memory
        assert f == figures_from({}, Gauges(dict.fromkeys(PUBLISHED_STATUSES, 0), 0, _no_jobs(), 0.0, memory))
        assert memory["queue"] == memory["store"]
        assert memory["queue"].used > 0
        assert not memory["queue"].full

    def test_a_full_redis_is_shown(self, redis_client: redis.Redis) -> None:
        """maxmemory reached under noeviction: the figures say Redis refuses writes."""
        with full(redis_client):
            f = read(redis_client, Reader(redis_client, clock=lambda: NOW), queue_name="callstate")
        assert f.redis_memory["queue"].full
        assert f.redis_memory["queue"].limit == 1
        assert f.redis_memory["store"].full

    def test_counters_of_a_separate_store_are_added(self, redis_client: redis.Redis, tmp_path: Path) -> None:
        """With the store on another Redis (STORE_REDIS_URL), the workers' counters there and the
        web processes' counters in the queue's Redis are added up; the calls come from the store."""
        store_server = RedisServer(tmp_path)
        store_server.start()
        try:
            store = store_server.client()
            redis_client.hset(keys.METRICS, mapping={"callbacks:call-status:204": 3, "events:new": 1})
            store.hset(keys.METRICS, mapping={"events:new": 2, LAG_FIELDS[0]: 2})
            store.zadd(keys.by_status("ringing", 0), {"CA1": NOW})
            f = read(redis_client, Reader(store, clock=lambda: NOW), queue_name="callstate")
        finally:
            store_server.stop()
        assert f.callbacks == {("call-status", "204"): 3}
        assert f.events["new"] == 3
        assert f.lag_count == 2
        assert f.calls["ringing"] == 1
        assert set(f.redis_memory) == {"queue", "store"}

    def test_a_cluster_store_reports_its_fullest_master(
        self, redis_client: redis.Redis, cluster_client: RedisCluster, redis_cluster: RedisClusterServer
    ) -> None:
        """The store on a Redis Cluster: each master is asked, and the one nearest its limit is
        shown (any full master refuses the writes of its calls)."""
        fullest = redis_cluster.master_nodes()[1].client()
        with full(fullest):
            f = read(redis_client, Reader(cluster_client, clock=lambda: NOW), queue_name="callstate")
        fullest.close()
        assert f.redis_memory["store"].full
        assert f.redis_memory["store"].limit == 1
        assert not f.redis_memory["queue"].full


def test_sum_counters_adds_field_by_field() -> None:
    """Several hashes add up; a value that is not an integer is skipped."""
    assert sum_counters({b"a": b"1", b"b": b"x"}, {"a": "2", "c": "3"}) == {"a": 3, "c": 3}


def _no_jobs() -> dict[str, int]:
    return {"queued": 0, "started": 0, "scheduled": 0, "failed": 0}


class TestPrometheusText:
    def example(self) -> Figures:
        return figures(
            **{
                callback_field("call-status", 204): 7,
                callback_field("recording-status", 403): 1,
                signature_field("missing"): 1,
                LAG_FIELDS[1]: 2,
                LAG_FIELDS[3]: 1,
                LAG_SUM: 70_000,
            }
        )

    def test_the_required_families_parse_with_their_values(self) -> None:
        """prometheus-client's parser reads back every family of the contract with its values."""
        parsed = samples(prometheus_text(self.example()))
        assert parsed[("callstate_callbacks_total", (("code", "204"), ("endpoint", "call-status")))] == 7
        assert parsed[("callstate_signature_failures_total", (("reason", "missing"),))] == 1
        assert parsed[("callstate_events_total", (("result", "new"),))] == 0
        assert parsed[("callstate_state_changes_total", (("status", "none"),))] == 0
        assert parsed[("callstate_calls", (("status", "completed"),))] == 2
        assert parsed[("callstate_stuck_calls", ())] == 1
        assert parsed[("callstate_queue_jobs", (("state", "queued"),))] == 3
        assert parsed[("callstate_queue_oldest_age_seconds", ())] == 4.5
        assert parsed[("callstate_sweep_requests_total", (("outcome", "final"),))] == 0
        assert parsed[("callstate_redis_memory_used_bytes", (("redis", "queue"),))] == 2_000_000
        assert parsed[("callstate_redis_memory_limit_bytes", (("redis", "store"),))] == 25_000_000
        assert parsed[("callstate_redis_full", (("redis", "queue"),))] == 0
        assert parsed[("callstate_redis_full", (("redis", "store"),))] == 1

    def test_the_lag_histogram_is_cumulative(self) -> None:
        """Buckets are cumulative in the text format; count and sum follow."""
        parsed = samples(prometheus_text(self.example()))
        assert parsed[("callstate_lag_seconds_bucket", (("le", "0.005"),))] == 0
        assert parsed[("callstate_lag_seconds_bucket", (("le", "0.01"),))] == 2
        assert parsed[("callstate_lag_seconds_bucket", (("le", "0.05"),))] == 3
        assert parsed[("callstate_lag_seconds_bucket", (("le", "+Inf"),))] == 3
        assert parsed[("callstate_lag_seconds_count", ())] == 3
        assert parsed[("callstate_lag_seconds_sum", ())] == pytest.approx(0.07)

    def test_promtool_accepts_it(self) -> None:
        """`promtool check metrics` (Prometheus's own linter) finds nothing to say."""
        result = promtool_check_metrics(prometheus_text(self.example()))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout + result.stderr == ""


def promtool_check_metrics(text: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text.decode(), capture_output=True, text=True, check=False
    )


class TestHumanText:
    def test_one_line_per_family_without_zeros(self) -> None:
        """`callstate stats` shows what happened, not the vocabulary."""
        text = human_text(TestPrometheusText().example())
        lines: dict[str, Any] = {line[:20].strip(): line[20:] for line in text.splitlines()}
        assert lines["callbacks"] == "call-status 204 7, recording-status 403 1"
        assert lines["signature failures"] == "missing 1"
        assert lines["events"] == "none"
        assert lines["stuck calls"] == "1"
        assert lines["queue jobs"] == "queued 3, oldest 4.5 s"
        assert lines["redis queue"] == "2.0 MB used of 25.0 MB (8%, noeviction)"
        assert (
            lines["redis store"]
            == "25.0 MB used of 25.0 MB (100%, noeviction), FULL: callbacks are refused (503)"
        )
        assert lines["lag"] == "3 events, mean 23 ms, p50 <= 10 ms, p90 <= 50 ms, p99 <= 50 ms"
