"""The bench's results: one table with the ratios issue 4 asks for, as Markdown, JSON and a PNG chart.

:class:`Results` collects what the phases measured; :func:`markdown` renders the tables (receiver
designs, workers, goals), :func:`write` puts ``results.json``, ``results.md`` and ``results.png``
in the output directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench.drain import DrainResult, MemoryResult
from bench.lag import LagResult
from bench.loadgen import LoadResult
from bench.pages import PagesResult
from bench.pages import table as pages_table
from bench.receiver import ReceiverResult
from bench.rqbaseline import BaselineResult


@dataclass(slots=True)
class Results:
    """Everything one run measured, with the machine it ran on."""

    machine: dict[str, str]
    settings: dict[str, object]
    receivers: list[ReceiverResult] = field(default_factory=list)
    half_rate: LoadResult | None = None
    #: The open loop at half the loopback maximum with Redis ``redis_delay_ms`` farther away.
    half_rate_far: LoadResult | None = None
    baselines: list[BaselineResult] = field(default_factory=list)
    drain: DrainResult | None = None
    #: The same drain with Redis ``redis_delay_ms`` farther away each way.
    drain_delayed: DrainResult | None = None
    redis_delay_ms: float = 0.0
    memory: MemoryResult | None = None
    lag: LagResult | None = None
    #: What the deployment's counters cost (bench.micro.counting): (what, us of CPU).
    metrics_cost: list[tuple[str, float]] = field(default_factory=list)
    #: What open live pages take from a web process (bench.pages).
    pages: list[PagesResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def receiver(self, key: str) -> ReceiverResult | None:
        return next((r for r in self.receivers if r.key == key), None)

    def baseline(self, worker: str) -> BaselineResult | None:
        return next((b for b in self.baselines if b.worker == worker), None)


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal of issue 4: what it asks, what was measured, whether it holds."""

    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def goals(results: Results) -> list[Goal]:
    """Issue 4's goals against this run."""
    bare, naive = results.receiver("bare"), results.receiver("naive_rq")
    callstate = results.receiver("callstate")
    simple = results.baseline("SimpleWorker")
    rate = callstate.rate if callstate else None
    vs_bare = _ratio(rate, bare.rate if bare else None)
    vs_naive = _ratio(rate, naive.rate if naive else None)
    # The same ratios from server CPU per callback, which other load on the machine moves less.
    capacity = callstate.per_core_second if callstate else None
    cpu_vs_bare = _ratio(capacity, bare.per_core_second if bare else None)
    cpu_vs_naive = _ratio(capacity, naive.per_core_second if naive else None)
    drain, lag, half = results.drain, results.lag, results.half_rate
    vs_rq = _ratio(drain.events_per_s if drain else None, simple.jobs_per_s if simple else None)
    # Issue 12: Redis a managed service's distance away, against loopback.
    # The far maximum is the best far run: with 64 connections the rate is bound by the latency.
    far = max((r.rate for r in results.receivers if r.key.startswith("callstate+Redis +")), default=None)
    web_far = _ratio(far, rate)
    delayed = results.drain_delayed
    workers_far = _ratio(delayed.events_per_s if delayed else None, drain.events_per_s if drain else None)

    def goal(name: str, target: str, value: float | None, fmt: str, ok: bool) -> Goal:
        if value is None or math.isnan(value):
            return Goal(name, target, "not measured", None)
        return Goal(name, target, fmt.format(value), ok)

    return [
        goal(
            "receiver vs bare-Starlette ceiling",
            ">= 0.33x",
            vs_bare,
            "{:.2f}x" + (f" (by CPU/cb: {cpu_vs_bare:.2f}x)" if cpu_vs_bare else ""),
            (vs_bare or 0) >= 1 / 3,
        ),
        goal(
            "receiver vs naive Starlette+RQ",
            ">= 7x",
            vs_naive,
            "{:.1f}x" + (f" (by CPU/cb: {cpu_vs_naive:.1f}x)" if cpu_vs_naive else ""),
            (vs_naive or 0) >= 7,
        ),
        goal(
            "p99 ack latency at half of callstate's max rate",
            "< 10 ms",
            half.p99_ms if half else None,
            "{:.1f} ms",
            bool(half and half.p99_ms < 10),
        ),
        goal(
            "workers: events/s reconciled, 2 processes",
            ">= 3,000/s",
            drain.events_per_s if drain else None,
            "{:,.0f}/s",
            bool(drain and drain.events_per_s >= 3000),
        ),
        goal("workers vs RQ SimpleWorker no-op baseline", ">= 7x", vs_rq, "{:.1f}x", (vs_rq or 0) >= 7),
        goal(
            "Redis commands per event, end to end",
            "<= 12",
            drain.commands_per_event if drain else None,
            "{:.1f}",
            bool(drain and drain.commands_per_event <= 12),
        ),
        goal(
            f"receiver with Redis +{results.redis_delay_ms:g} ms each way, vs loopback",
            ">= 0.5x",
            web_far,
            "{:.2f}x",
            (web_far or 0) >= 0.5,
        ),
        far_open_loop(results, rate),
        goal(
            f"workers with Redis +{results.redis_delay_ms:g} ms each way, vs loopback",
            ">= 0.5x",
            workers_far,
            "{:.2f}x",
            (workers_far or 0) >= 0.5,
        ),
        goal(
            "end-to-end lag p99 at 1,000 events/s",
            "< 50 ms",
            lag.p99_ms if lag else None,
            "{:.1f} ms",
            bool(lag and lag.p99_ms < 50),
        ),
    ]


#: An open loop "keeps up" when it is answered at this share of the offered rate or more (the last
#: answers come after the schedule ends, so even a server with room to spare shows a little less).
KEEPS_UP: Final = 0.97


def far_open_loop(results: Results, loopback_rate: float | None) -> Goal:
    """The open loop at half the loopback maximum with Redis farther away: all 204, kept up."""
    name = f"receiver with Redis +{results.redis_delay_ms:g} ms each way, open loop at half the loopback max"
    far = results.half_rate_far
    if far is None or not loopback_rate:
        return Goal(name, "keeps up, all 204", "not measured", None)
    offered = loopback_rate / 2
    only_204 = {str(status) for status in far.statuses} == {"204"}
    measured = f"{_num(far.rate)}/s of {_num(offered)}/s, p99 {far.p99_ms:.1f} ms"
    return Goal(name, "keeps up, all 204", measured, only_204 and far.rate >= KEEPS_UP * offered)


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def receiver_table(results: Results) -> list[str]:
    bare = results.receiver("bare")
    rows = [
        "| design | callbacks/s | vs ceiling | p50 ms | p99 ms | server CPU/cb | cb per CPU-s "
        "| Redis CPU/cb | wrk CPU/cb (core) | other load | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.receivers:
        share = f"{r.rate / bare.rate:.2f}x" if bare else "-"
        errors = r.errors + r.non_2xx
        variant = f" [{r.key.split('+', 1)[1]}]" if "+" in r.key else ""
        rows.append(
            f"| {r.label}{variant} | {_num(r.rate)} | {share} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {_num(r.server_cpu_us)} us | {_num(r.per_core_second)} | {_num(r.redis_cpu_us)} us "
            f"| {r.wrk_cpu_us:.0f} us ({100 * r.wrk_core_share:.0f}%) | {r.other_cores:.2f} cores "
            f"| {errors} |"
        )
    return rows


def worker_table(results: Results) -> list[str]:
    rows = [
        "| workers | events or jobs/s | CPU per event/job | Redis commands per event/job |",
        "|---|---:|---:|---:|",
    ]
    drain = results.drain
    if drain is not None:
        rows.append(
            f"| callstate worker x{drain.workers} (realistic events, {drain.events_per_job:.0f}/job) "
            f"| {_num(drain.events_per_s)} events/s | {_num(drain.worker_cpu_us)} us "
            f"| {drain.commands_per_event:.1f} (web + workers) |"
        )
    delayed = results.drain_delayed
    if delayed is not None:
        share = f", {delayed.events_per_s / drain.events_per_s:.2f}x loopback" if drain else ""
        rows.append(
            f"| callstate worker x{delayed.workers}, Redis +{results.redis_delay_ms:g} ms each way "
            f"({delayed.events_per_job:.0f}/job) | {_num(delayed.events_per_s)} events/s{share} "
            f"| {_num(delayed.worker_cpu_us)} us | {delayed.commands_per_event:.1f} (web + workers) |"
        )
    for b in results.baselines:
        rows.append(
            f"| RQ {b.worker}, one process, no-op job per event | {_num(b.jobs_per_s)} jobs/s "
            f"| {_num(b.cpu_us_per_job)} us | {b.commands_per_job:.1f} (enqueue + run) |"
        )
    return rows


def markdown(results: Results) -> str:
    """The whole report: receivers, open loop, workers, lag, memory, goals, notes."""
    title = "## Receiver: one web process on one core, wrk, 64 keep-alive connections unless the row says"
    lines = [title, ""]
    lines += receiver_table(results)
    if results.half_rate is not None:
        h = results.half_rate
        lines += [
            "",
            f"Open loop at half of callstate's max ({_num(h.rate)} callbacks/s for {h.seconds:.0f} s, "
            f"python load generator, {h.cpu_seconds:.1f} s CPU): p50 {h.p50_ms:.1f} ms, "
            f"p90 {h.p90_ms:.1f} ms, p99 {h.p99_ms:.1f} ms, p99.9 {h.p999_ms:.1f} ms; "
            f"answers {h.statuses}, generator at most {h.max_behind_ms:.1f} ms behind schedule.",
        ]
    if results.half_rate_far is not None:
        f = results.half_rate_far
        lines += [
            "",
            f"Open loop at the same rate with Redis +{results.redis_delay_ms:g} ms each way "
            f"({_num(f.rate)} callbacks/s answered, {results.settings.get('far_connections', '?')} "
            f"connections): p50 {f.p50_ms:.1f} ms, p90 {f.p90_ms:.1f} ms, p99 {f.p99_ms:.1f} ms, "
            f"p99.9 {f.p999_ms:.1f} ms; answers {f.statuses}.",
        ]
    lines += ["", "## Workers", ""]
    lines += worker_table(results)
    if results.drain is not None:
        d = results.drain
        lines += [
            "",
            f"Drain: {d.events:,} callbacks ({d.distinct:,} distinct) of {d.calls:,} calls, "
            f"{d.jobs:,} jobs, in {d.seconds:.2f} s; {d.reconciled_calls:,} calls reconciled, "
            f"{d.incomplete_calls} incomplete. Pre-fill through callstate web: "
            f"{_num(d.prefill_rate)} callbacks/s, {_num(d.prefill_web_cpu_us)} us web CPU per callback.",
        ]
    if results.lag is not None:
        g = results.lag
        lines += [
            "",
            f"End-to-end lag (204 -> state readable) at {_num(g.rate)} events/s with 2 workers: "
            f"p50 {g.p50_ms:.0f} ms, p90 {g.p90_ms:.0f} ms, p99 {g.p99_ms:.0f} ms, max {g.max_ms:.0f} ms "
            f"({g.matched:,} of {g.events:,} events matched; 204 latency p50 {g.ack_p50_ms:.1f} ms, "
            f"p99 {g.ack_p99_ms:.1f} ms). The workers ran {g.jobs:,} jobs, "
            f"{g.events_per_job:.1f} events per job.",
        ]
    closed = next((r for r in results.receivers if r.key.endswith("no page open")), None)
    paged = next((r for r in results.receivers if r.key.endswith("live pages open")), None)
    if closed is not None and paged is not None:
        lines += [
            "",
            f"Live pages during wrk (the change stream moving, runs alternating without and with "
            f"{paged.key.split('+', 1)[1]}, the fastest of each kept): {paged.server_cpu_us:.0f} us of web "
            f"CPU per callback with the pages against {closed.server_cpu_us:.0f} us without "
            f"({paged.server_cpu_us - closed.server_cpu_us:+.0f} us); {_num(paged.rate)} against "
            f"{_num(closed.rate)} callbacks/s.",
        ]
    if results.memory is not None:
        m = results.memory
        lines += [
            "",
            f"Memory per final call with a recording ({m.sampled_calls} sampled, {m.mean_events:.1f} "
            f"events each): {_num(m.bytes_per_call)} bytes = {_num(m.call_keys_bytes)} (the call "
            f"hash: state, events, deliveries) + {_num(m.global_share_bytes)} (share of indexes and "
            f"change stream); used_memory grew {_num(m.used_memory_delta_per_call)} bytes per call "
            "over the drain.",
        ]
    if results.metrics_cost:
        lines += ["", "## What the metrics cost (in-process, best of 7, CPU time)", ""]
        lines += ["| what | CPU |", "|---|---:|"]
        lines += [f"| {what} | {micros:.1f} us |" for what, micros in results.metrics_cost]
    if results.pages:
        web = results.receiver("callstate")
        per_callback = web.server_cpu_us if web is not None and web.server_cpu_us else 60.0
        lines += ["", "## Live pages: the web process's CPU with pages open (bench/pages.py)", ""]
        lines += [pages_table(results.pages, per_callback)]
    lines += ["", "## Goals (issue 4)", "", "| goal | target | measured | met |", "|---|---|---|---|"]
    for item in goals(results):
        met = "n/a" if item.met is None else ("yes" if item.met else "**no**")
        lines.append(f"| {item.name} | {item.target} | {item.measured} | {met} |")
    if results.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results.notes]
    machine = ", ".join(f"{k}: {v}" for k, v in results.machine.items())
    lines += ["", f"Machine and versions: {machine}."]
    return "\n".join(lines) + "\n"


def chart(results: Results, path: Path) -> None:
    """Four panels: receiver rate, server CPU per callback, latency, worker rates."""
    import matplotlib  # noqa: PLC0415 - only the report needs it, and only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    receivers = results.receivers
    names = [r.key for r in receivers]
    colors = ["#d62728" if r.key.startswith("callstate") else "#7f7f7f" for r in receivers]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    panel = axes[0][0]
    panel.bar(names, [r.rate for r in receivers], color=colors)
    bare = results.receiver("bare")
    if bare is not None:
        goal_line = {"color": "#d62728", "linestyle": "--", "linewidth": 1}
        panel.axhline(bare.rate / 3, label="goal: 1/3 of ceiling", **goal_line)
        panel.legend()
    panel.set_title("callbacks/s, one web process (higher is better)")
    panel = axes[0][1]
    panel.bar(names, [r.server_cpu_us for r in receivers], color=colors)
    panel.set_title("server CPU per callback, us (lower is better)")
    panel = axes[1][0]
    positions = range(len(receivers))
    panel.bar([p - 0.2 for p in positions], [r.p50_ms for r in receivers], width=0.4, label="p50")
    panel.bar([p + 0.2 for p in positions], [r.p99_ms for r in receivers], width=0.4, label="p99")
    panel.set_xticks(list(positions), names)
    panel.set_yscale("log")
    panel.set_title("latency at max rate, ms (64 connections, closed loop)")
    panel.legend()
    panel = axes[1][1]
    labels, values = [], []
    if results.drain is not None:
        labels.append(f"callstate x{results.drain.workers}\nevents/s")
        values.append(results.drain.events_per_s)
    for b in results.baselines:
        labels.append(f"RQ {b.worker.split()[0]}\nno-op jobs/s")
        values.append(b.jobs_per_s)
    panel.bar(labels, values, color=["#d62728"] + ["#7f7f7f"] * (len(values) - 1))
    panel.axhline(3000, color="#d62728", linestyle="--", linewidth=1, label="goal: 3,000 events/s")  # issue 4
    panel.legend(loc="upper right")
    panel.set_title("workers: events (jobs) per second")
    for row in axes:
        for ax in row:
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
    machine = results.machine
    fig.suptitle(f"callstate bench ({machine.get('cpu', '?')}, {machine.get('nproc', '?')} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: Results, out: Path) -> str:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out``; return the Markdown."""
    text = markdown(results)
    (out / "results.md").write_text(text)
    payload = asdict(results)
    payload["goals"] = [asdict(g) for g in goals(results)]
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    chart(results, out / "results.png")
    return text
