"""The figures for machines and for people: Prometheus's text format and ``callstate stats``.

Both render the same :class:`~callstate.metrics.Figures` (pure: no I/O). The Prometheus families
and their labels are a public contract (README.md, "Monitoring"); prometheus-client writes the
format, so escaping, ``_total`` suffixes and cumulative histogram buckets follow its rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from callstate.counters import LAG_BUCKETS
from callstate.metrics import Figures, RedisMemory

#: The classic text format (0.0.4), which every Prometheus since 2.0 reads.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4


class _FiguresCollector(Collector):
    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        callbacks = CounterMetricFamily(
            "callstate_callbacks",
            "Twilio callbacks answered, by endpoint and HTTP status.",
            labels=["endpoint", "code"],
        )
        for (endpoint, code), value in sorted(f.callbacks.items()):
            callbacks.add_metric([endpoint, code], value)
        yield callbacks
        yield _labelled(
            CounterMetricFamily,
            "callstate_signature_failures",
            "Callbacks refused (403) because of their signature, by reason.",
            "reason",
            f.signature_failures,
        )
        yield _labelled(
            CounterMetricFamily,
            "callstate_events",
            "Events the workers got: new, a duplicate of a stored one, or over the per-call cap.",
            "result",
            f.events,
        )
        yield _labelled(
            CounterMetricFamily,
            "callstate_state_changes",
            "Changes of a call's reconciled state, by the status after the change.",
            "status",
            f.state_changes,
        )
        yield _labelled(
            CounterMetricFamily,
            "callstate_sweep_requests",
            "REST requests of the stuck-call sweep, by outcome.",
            "outcome",
            f.sweep_requests,
        )
        yield _labelled(
            GaugeMetricFamily,
            "callstate_calls",
            "Calls in the store by current status (none: no status yet).",
            "status",
            f.calls,
        )
        yield GaugeMetricFamily(
            "callstate_stuck_calls",
            "Calls not final whose latest event is older than CALLSTATE_STUCK_AFTER.",
            value=f.stuck_calls,
        )
        yield _labelled(
            GaugeMetricFamily,
            "callstate_queue_jobs",
            "RQ jobs of the events queue, by state.",
            "state",
            f.queue_jobs,
        )
        yield GaugeMetricFamily(
            "callstate_queue_oldest_age_seconds",
            "How long the oldest queued job has waited (0 when none waits).",
            value=f.queue_oldest_age,
        )
        if f.redis_memory:
            used = GaugeMetricFamily(
                "callstate_redis_memory_used_bytes",
                "Memory Redis uses (INFO used_memory): queue is REDIS_URL, store is STORE_REDIS_URL "
                "(the same server unless set; on a cluster, its fullest master).",
                labels=["redis"],
            )
            limit = GaugeMetricFamily(
                "callstate_redis_memory_limit_bytes",
                "Redis's maxmemory (0: no limit).",
                labels=["redis"],
            )
            full = GaugeMetricFamily(
                "callstate_redis_full",
                "1 while Redis refuses writes for lack of memory (maxmemory reached under noeviction): "
                "callbacks are answered 503.",
                labels=["redis"],
            )
            for role, memory in f.redis_memory.items():
                used.add_metric([role], memory.used)
                limit.add_metric([role], memory.limit)
                full.add_metric([role], int(memory.full))
            yield from (used, limit, full)
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, LAG_BUCKETS), "+Inf"), f.lag_buckets, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        yield HistogramMetricFamily(
            "callstate_lag_seconds",
            "Seconds from a callback's acceptance (its 204) to its call's state being written.",
            buckets=buckets,
            sum_value=f.lag_sum,
        )


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, int],
) -> Metric:
    metric = family(name, documentation, labels=[label])
    for value_label, value in values.items():
        metric.add_metric([value_label], value)
    return metric


def prometheus_text(figures: Figures) -> bytes:
    """``figures`` in Prometheus's text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(_FiguresCollector(figures))


def human_text(figures: Figures) -> str:
    """``figures`` as ``callstate stats`` prints them: one line per family, zeros left out."""
    f = figures
    lines = [
        _line("callbacks", {f"{endpoint} {code}": n for (endpoint, code), n in sorted(f.callbacks.items())}),
        _line("signature failures", f.signature_failures),
        _line("events", f.events),
        _line("state changes", f.state_changes),
        _line("calls now", f.calls),
        f"{'stuck calls':<20}{f.stuck_calls:,}",
        _line("queue jobs", f.queue_jobs, keep_zeros=True) + f", oldest {_seconds(f.queue_oldest_age)}",
        f"{'lag':<20}{_lag(f)}",
        _line("sweep requests", f.sweep_requests),
        *(f"{'redis ' + role:<20}{_memory(m)}" for role, m in f.redis_memory.items()),
    ]
    return "\n".join(lines) + "\n"


def _line(title: str, values: Mapping[str, int], *, keep_zeros: bool = False) -> str:
    shown = [f"{label} {n:,}" for label, n in values.items() if n or keep_zeros]
    return f"{title:<20}{', '.join(shown) or 'none'}"


def _lag(f: Figures) -> str:
    if not f.lag_count:
        return "no events yet"
    parts = [f"{f.lag_count:,} events", f"mean {_seconds(f.lag_sum / f.lag_count)}"]
    for q in (0.5, 0.9, 0.99):
        bound = f.lag_quantile(q)
        # The histogram only knows buckets: a quantile is at most its bucket's upper bound.
        if bound is None or bound == float("inf"):
            parts.append(f"p{round(q * 100)} > {_seconds(LAG_BUCKETS[-1])}")
        else:
            parts.append(f"p{round(q * 100)} <= {_seconds(bound)}")
    return ", ".join(parts)


def _memory(memory: RedisMemory) -> str:
    used = f"{memory.used / 1e6:,.1f} MB used"
    if not memory.limit:
        return f"{used}, no maxmemory"
    state = ", FULL: callbacks are refused (503)" if memory.full else ""
    return (
        f"{used} of {memory.limit / 1e6:,.1f} MB ({memory.used / memory.limit:.0%}, {memory.policy}){state}"
    )


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
