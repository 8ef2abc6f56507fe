"""The ``callstate`` command: the processes of the Procfile and the operator's tools.

``callstate web``     the receiver and read API (uvicorn)
``callstate worker``  RQ workers reconciling events into the store
``callstate token``   print a read token for the read API
``callstate check``   the release step: configuration complete, Redis reachable
``callstate sweep``   once: ask Twilio about stuck calls, prune expired index entries
``callstate requeue-failed``  put the jobs that exhausted their retries back on the queue
``callstate replay CALLSID... | --all``  recompute calls from their stored events
``callstate migrate``  move every record of a schema 2 store to schema 3 (resumable)
``callstate inspect CALLSID [--json]``  a call's timeline (each distinct event, its deliveries) and state
``callstate simulate --url BASE --calls N [--verify]``  send realistic signed callbacks to a deployment
``callstate watch``   print the store's changes as they happen
``callstate stats``   the deployment's figures (those of GET /metrics), for a human

Every command reads ``./.env`` first, as `make run` does for its processes; the environment wins
(:mod:`callstate.dotenv`). A configuration error is one line naming the variable and exit status 2,
never a traceback; so is a bad argument (a malformed CallSid changes nothing).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from callstate import dotenv, keys, logs
from callstate.errors import ConfigError, UnreadableValue
from callstate.event import CALL_RECORD, CALL_SID
from callstate.progress import Progress
from callstate.settings import Settings
from callstate.tokens import MAX_TTL

if TYPE_CHECKING:
    from callstate import simulation, simulator

#: Calls listed by name when --verify finds some not as expected.
_LISTED: Final = 20


def _web(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only the web process needs it

    from receiver.protocol import raise_descriptor_limit  # noqa: PLC0415 - the web process only

    settings.require_web()
    logs.configure(settings.log_format)
    raise_descriptor_limit(settings.max_connections)
    uvicorn.run(
        "receiver.app:create_app",
        factory=True,
        host=args.host,
        port=settings.port,
        workers=args.workers or settings.web_concurrency,
        # Limits for slow and greedy clients (README.md, "Slow and greedy clients"): a request must
        # arrive whole within CALLSTATE_REQUEST_TIMEOUT, headers are capped, and descriptors kept.
        http="receiver.protocol:LimitedHttpProtocol",
        # uvicorn counts the connection being served: +1 serves max_connections, not one fewer.
        limit_concurrency=settings.max_connections + 1,
        # A kept-alive connection idle this long is closed (uvicorn's default, stated).
        timeout_keep_alive=5,
        # Forwarded headers are handled by receiver.publicurl, for the signed URL.
        proxy_headers=False,
        access_log=False,
        # Not advertised: nothing for a scanner to match, and a little less work per request.
        server_header=False,
        log_config=logs.dict_config(settings.log_format),
        # Heroku sends SIGKILL 30 s after SIGTERM: finish in-flight requests well before.
        timeout_graceful_shutdown=20,
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers import runner  # noqa: PLC0415 - the web process never imports it

    logs.configure(settings.log_format)
    runner.run(settings, burst=args.burst, name=args.name)
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    """The release step: configuration complete, Redis reachable, schema version written."""
    from callstate.checks import base_url_warnings  # noqa: PLC0415
    from callstate.connection import connect, connect_store  # noqa: PLC0415
    from workers.store import Store  # noqa: PLC0415

    settings.require_web()
    redis = connect(settings, command_timeout=settings.redis_timeout, role="cli")
    redis.ping()  # the queue, then the store (which may be the same Redis)
    store = connect_store(settings, command_timeout=settings.redis_timeout, role="cli", queue=redis)
    Store(store, settings.retention_seconds, settings.max_events_per_call).write_schema_version()
    warnings = base_url_warnings(os.environ)
    for warning in warnings:
        print(f"callstate: warning: {warning}", file=sys.stderr)  # noqa: T201
    note = f" ({len(warnings)} warning(s) above)" if warnings else ""
    print(f"callstate: configuration ok{note}, Redis ok, schema {keys.SCHEMA_VERSION}")  # noqa: T201
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from callstate import tokens  # noqa: PLC0415

    if not settings.secret_key:
        raise ConfigError("SECRET_KEY", "is not set; read tokens are signed with it")
    try:
        token = tokens.issue(settings.secret_key, ttl=args.ttl, accounts=args.account or ())
    except ValueError as exc:
        return _refuse("token", str(exc))
    print(token)  # noqa: T201 - the command's output
    return 0


def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    from workers.sweep import sweep_once  # noqa: PLC0415
    from workers.twilioapi import TwilioAPI  # noqa: PLC0415

    logs.configure(settings.log_format)
    api = TwilioAPI.from_settings(settings)
    result = sweep_once(settings, api=api)
    if result is None:
        print("callstate: another sweep is running", file=sys.stderr)  # noqa: T201
        return 1
    if api is None:
        print(  # noqa: T201
            f"sweep: no Twilio REST credentials (TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET, or "
            f"TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN), so Twilio was asked about nothing; "
            f"{result.scanned} stuck call(s) seen, {result.pruned} expired index entr(ies) pruned"
        )
        return 0
    print(  # noqa: T201
        f"sweep: {result.scanned} stuck call(s) seen, {result.asked} asked about, "
        f"{len(result.finalized)} finalized, {result.still_active} still active, "
        f"{result.not_found} unknown to Twilio, {result.failed} failed; {result.pruned} pruned"
    )
    return 0


def _requeue_failed(settings: Settings, args: argparse.Namespace) -> int:
    from rq.exceptions import InvalidJobOperation, NoSuchJobError  # noqa: PLC0415
    from rq.registry import FailedJobRegistry  # noqa: PLC0415

    from callstate.connection import connect  # noqa: PLC0415
    from callstate.jobqueue import make_queue  # noqa: PLC0415

    logs.configure(settings.log_format)
    redis = connect(settings, command_timeout=settings.redis_timeout, role="cli")
    queue = make_queue(redis, settings.queue_name)
    registry = FailedJobRegistry(queue=queue)
    job_ids = registry.get_job_ids()
    progress = Progress("requeue-failed", sys.stderr, total=len(job_ids))
    requeued = 0
    for job_id in job_ids:
        try:
            registry.requeue(job_id)
        except (InvalidJobOperation, NoSuchJobError):
            pass  # requeued by someone else meanwhile, or expired
        else:
            requeued += 1
        progress.advance(1)
    progress.finish()
    print(f"requeued {requeued} failed job(s) onto {settings.queue_name}")  # noqa: T201
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from callstate.connection import connect_store  # noqa: PLC0415
    from workers.replay import replay  # noqa: PLC0415
    from workers.store import Store  # noqa: PLC0415

    if args.all == bool(args.call_sids):
        return _refuse("replay", "name CALLSIDs or pass --all (not both)")
    # A tenant's call is named by its record, CallSid:AccountSid (docs/redis-schema.md, "Tenants").
    malformed = [sid for sid in args.call_sids if not CALL_RECORD.fullmatch(sid)]
    if malformed:
        return _refuse("replay", f"not a CallSid: {', '.join(malformed)}; nothing changed")
    logs.configure(settings.log_format)
    redis = connect_store(settings, command_timeout=settings.redis_timeout, role="cli")
    store = Store(redis, settings.retention_seconds, settings.max_events_per_call)
    progress = Progress("replay", sys.stderr, total=None if args.all else len(args.call_sids))
    done = replay(
        store,
        None if args.all else args.call_sids,
        lambda so_far: progress.advance(so_far.calls + len(so_far.unknown) - progress.done),
    )
    progress.finish()
    for sid in done.unknown:
        print(f"callstate replay: unknown call {sid} (no stored events): nothing changed", file=sys.stderr)  # noqa: T201
    print(f"replayed {done.calls} call(s), {done.changed} changed")  # noqa: T201
    return 1 if done.unknown else 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from callstate.connection import connect_store  # noqa: PLC0415
    from workers.migration import migrate  # noqa: PLC0415
    from workers.store import Store  # noqa: PLC0415

    logs.configure(settings.log_format)
    redis = connect_store(settings, command_timeout=settings.redis_timeout, role="cli")
    store = Store(redis, settings.retention_seconds, settings.max_events_per_call)
    progress = Progress("migrate", sys.stderr, total=None)
    done = migrate(store, lambda so_far: progress.advance(so_far.records - progress.done))
    progress.finish()
    print(f"migrated {done.records} call record(s); the store is at schema {keys.SCHEMA_VERSION}")  # noqa: T201
    return 0


def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    from callstate.connection import connect  # noqa: PLC0415
    from workers import timeline  # noqa: PLC0415

    sid = args.call_sid
    if not CALL_SID.fullmatch(sid):
        return _refuse("inspect", f"not a CallSid: {sid}")
    redis = connect(settings, command_timeout=settings.redis_timeout, role="cli")
    state, entries = timeline.read(redis, sid)
    if state is None and not entries:
        print(f"callstate inspect: unknown call {sid}", file=sys.stderr)  # noqa: T201
        return 1
    if args.json:
        sys.stdout.write(timeline.to_json(sid, state, entries).decode() + "\n")
    else:
        print(timeline.render(sid, state, entries))  # noqa: T201
    return 0


def _refuse(command: str, problem: str) -> int:
    """A bad argument: one line, exit status 2, nothing done."""
    print(f"callstate {command}: {problem}", file=sys.stderr)  # noqa: T201
    return 2


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - only this command runs an event loop of its own

    from callstate import simulation, simulator  # noqa: PLC0415

    signer = _signer(settings, args.shared_key)
    if args.verify and not settings.secret_key:
        raise ConfigError("SECRET_KEY", "is not set; --verify reads the calls back with a token made from it")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    start = args.start or simulator.now_utc()
    plan = simulation.plan(
        seed,
        args.calls,
        start=start,
        duplicates=args.duplicates,
        account=settings.account_sid or None,
    )
    begin = start.isoformat().replace("+00:00", "Z")
    print(f"simulate: seed {seed}, start {begin}, {len(plan.calls):,} calls to {args.url}")  # noqa: T201
    target = simulator.Target(args.url, signer, args.concurrency, args.rate, args.retries)
    return asyncio.run(_simulate_and_verify(settings, args, plan, target))


def _signer(settings: Settings, shared_key: str | None) -> simulation.Signer:
    """Sign as Twilio would: with the auth token, or with the Webhook SharedKey named ``shared_key``."""
    from callstate import simulation  # noqa: PLC0415

    if shared_key is None:
        if not settings.auth_token:
            raise ConfigError("TWILIO_AUTH_TOKEN", "is not set; the simulator signs the callbacks with it")
        return simulation.Signer(settings.auth_token)
    secret = settings.shared_keys.get(shared_key)
    if secret is None:
        raise ConfigError("TWILIO_SHARED_KEYS", f"holds no key {shared_key!r} (--shared-key)")
    return simulation.Signer(secret, shared_key)


async def _simulate_and_verify(
    settings: Settings, args: argparse.Namespace, plan: simulation.Plan, target: simulator.Target
) -> int:
    from callstate import simulation, simulator, tokens  # noqa: PLC0415

    async with simulator.client(args.concurrency) as http:
        stopwatch = simulator.elapsed()
        tally = await simulator.send(plan, target, http=http, progress=sys.stderr.isatty())
        signed_with = "TWILIO_AUTH_TOKEN" if args.shared_key is None else f"the SharedKey {args.shared_key}"
        simulator.report(plan, tally, stopwatch(), sys.stdout, signed_with)
        code = 1 if tally.failed else 0
        if not args.verify:
            return code
        from workers.reduce import reduce  # noqa: PLC0415 - the expected state is the reducer's

        expected = simulation.expected_states(plan.calls, tally, lambda sid, ev: reduce(sid, ev).to_dict())
        try:
            wrong = await simulator.read_back(
                expected,
                http=http,
                base_url=args.url,
                read_token=tokens.issue(settings.secret_key, ttl=3600),
                timeout=args.verify_timeout,
            )
        except simulator.ReadRefused as exc:
            print(f"verify: FAILED: {exc} (is SECRET_KEY the web process's?)")  # noqa: T201
            return 1
    unchecked = sum(1 for e in expected if not e.candidates)
    absent = sum(1 for e in expected if e.candidates == (None,) and e.call.sid not in wrong)
    print(  # noqa: T201
        f"verify: {len(expected) - len(wrong) - unchecked - absent:,} calls stored as expected, "
        f"{len(wrong):,} not"
        + (f", {absent:,} correctly absent (no callback acknowledged)" if absent else "")
        + (f", {unchecked:,} not checkable (too many callbacks without an answer)" if unchecked else "")
    )
    for sid, reason in sorted(wrong.items())[:_LISTED]:
        print(f"  {sid}: {reason}")  # noqa: T201
    if len(wrong) > _LISTED:
        print(f"  ... and {len(wrong) - _LISTED:,} more")  # noqa: T201
    return 1 if wrong else code


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError("must be an absolute http(s) URL without query or fragment")
    return raw.rstrip("/")


def _start_time(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an ISO 8601 time, e.g. 2026-09-01T12:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = kind(raw)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def _watch(settings: Settings, args: argparse.Namespace) -> int:
    from callstate.reader import check_position  # noqa: PLC0415
    from callstate.watch import watch  # noqa: PLC0415

    since = "0-0" if args.from_start else args.since
    if since != "$":
        try:
            check_position(since)
        except ValueError:
            raise SystemExit(
                f"callstate watch: --since takes a stream ID like 1700000000000-0, not {since!r}"
            ) from None
    try:
        return watch(settings, since=since, count=args.count)
    except KeyboardInterrupt:
        return 130


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    from callstate import metrics  # noqa: PLC0415
    from callstate.connection import connect, connect_store  # noqa: PLC0415
    from callstate.exposition import human_text  # noqa: PLC0415
    from callstate.reader import Reader  # noqa: PLC0415

    redis = connect(settings, command_timeout=settings.redis_timeout, role="cli")
    store = connect_store(settings, command_timeout=settings.redis_timeout, role="cli", queue=redis)
    reader = Reader(store, stuck_after=settings.stuck_after)
    figures = metrics.read(redis, reader, queue_name=settings.queue_name)
    print(human_text(figures), end="")  # noqa: T201 - the command's output
    return 0


def _ttl(raw: str) -> int:
    """``--ttl``: whole seconds, 1 to 30 days (callstate.tokens.MAX_TTL)."""
    try:
        ttl = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be whole seconds, got {raw!r}") from None
    if ttl <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {ttl}")
    if ttl > MAX_TTL:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TTL} seconds (30 days), got {ttl}")
    return ttl


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="callstate", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    web = commands.add_parser("web", help="run the receiver and read API")
    web.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server listens on all interfaces
    web.add_argument(
        "--workers",
        type=int,
        help="uvicorn processes (default: $WEB_CONCURRENCY or 1)",
    )
    web.set_defaults(run=_web)

    worker = commands.add_parser("worker", help="run an RQ worker on the events queue")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--name", help="worker name (default: callstate.<host>.<pid>)")
    worker.set_defaults(run=_worker)

    check = commands.add_parser("check", help="check configuration and Redis (the release step)")
    check.set_defaults(run=_check)

    token = commands.add_parser("token", help="print a read token for the read API")
    token.add_argument(
        "--ttl", type=_ttl, default=24 * 3600, help="lifetime in seconds (at most 2592000: 30 days)"
    )
    token.add_argument(
        "--account",
        action="append",
        metavar="AC…",
        help="read only this account's calls (repeatable; default: every account)",
    )
    token.set_defaults(run=_token)

    sweep = commands.add_parser(
        "sweep", help="ask Twilio about stuck calls and prune expired index entries, once"
    )
    sweep.set_defaults(run=_sweep)

    requeue = commands.add_parser("requeue-failed", help="requeue jobs that exhausted their retries")
    requeue.set_defaults(run=_requeue_failed)

    replay = commands.add_parser("replay", help="recompute calls from their stored events")
    replay.add_argument("call_sids", nargs="*", metavar="CALLSID")
    replay.add_argument("--all", action="store_true", help="every call in the store")
    replay.set_defaults(run=_replay)
    commands.add_parser(
        "migrate", help="move every record of a schema 2 store to schema 3 (resumable)"
    ).set_defaults(run=_migrate)

    inspect = commands.add_parser("inspect", help="a call's timeline and state")
    inspect.add_argument("call_sid", metavar="CALLSID")
    inspect.add_argument("--json", action="store_true", help="JSON instead of a table")
    inspect.set_defaults(run=_inspect)

    simulate = commands.add_parser(
        "simulate",
        help="send realistic signed Twilio callbacks to a deployment (and --verify what it stored)",
        description=(
            "Signs with TWILIO_AUTH_TOKEN (or a SharedKey of TWILIO_SHARED_KEYS); "
            "--verify reads back with a token from SECRET_KEY."
        ),
    )
    simulate.add_argument(
        "--url", type=_base_url, required=True, help="the public base URL Twilio would call"
    )
    simulate.add_argument("--calls", type=_positive(int), required=True, help="number of calls")
    simulate.add_argument(
        "--rate", type=_positive(float), help="callbacks per second (default: as fast as allowed)"
    )
    simulate.add_argument("--concurrency", type=_positive(int), default=32, help="requests in flight (32)")
    simulate.add_argument("--duplicates", type=_fraction, default=0.05, help="share delivered twice (0.05)")
    simulate.add_argument(
        "--retries", type=int, choices=range(6), default=1, help="retries of a failed request (1)"
    )
    simulate.add_argument("--seed", type=int, help="reproduce a run (the same calls, order and duplicates)")
    simulate.add_argument(
        "--start",
        type=_start_time,
        help="when the calls begin, ISO 8601 UTC (default: now); with --seed, the same run byte for byte",
    )
    simulate.add_argument(
        "--shared-key",
        metavar="KEY_ID",
        help="sign with this Webhook SharedKey of TWILIO_SHARED_KEYS (HMAC-SHA256), not the auth token",
    )
    simulate.add_argument("--verify", action="store_true", help="read every call back and compare")
    simulate.add_argument(
        "--verify-timeout", type=_positive(float), default=60.0, help="seconds to wait for the workers (60)"
    )
    simulate.set_defaults(run=_simulate)

    watch = commands.add_parser("watch", help="print the store's changes as they happen")
    start = watch.add_mutually_exclusive_group()
    start.add_argument(
        "--since", default="$", metavar="POSITION", help="after this stream ID (the last word of a line)"
    )
    start.add_argument("--from-start", action="store_true", help="every change the stream still holds")
    watch.add_argument("--count", type=_positive(int), metavar="N", help="exit after N changes")
    watch.set_defaults(run=_watch)

    stats = commands.add_parser("stats", help="print the deployment's figures (those of GET /metrics)")
    stats.set_defaults(run=_stats)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # ./.env as make run hands it to its processes; into os.environ, so that uvicorn's worker
        # processes and RQ's scheduler, which read it again, see the same.
        dotenv.load(os.environ)
        settings = Settings.from_environ(os.environ)
        code: int = args.run(settings, args)
    except ConfigError as exc:
        print(f"callstate: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except UnreadableValue as exc:
        print(f"callstate: unreadable store value: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except RedisError as exc:
        from callstate.connection import describe_error  # noqa: PLC0415

        print(f"callstate: Redis unavailable: {describe_error(exc)}", file=sys.stderr)  # noqa: T201
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
