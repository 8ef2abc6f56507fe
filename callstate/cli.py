"""The ``callstate`` command: the processes of the Procfile and the operator's tools.

``callstate web``     the receiver and read API (uvicorn)
``callstate worker``  RQ workers reconciling events into the store
``callstate token``   print a read token for the read API
``callstate check``   the release step: configuration complete, Redis reachable
``callstate sweep``   once: ask Twilio about stuck calls, prune expired index entries
``callstate requeue-failed``  put the jobs that exhausted their retries back on the queue
``callstate replay CALLSID... | --all``  recompute calls from their stored events

A configuration error is one line naming the variable and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from redis.exceptions import RedisError

from callstate import keys, logs
from callstate.errors import ConfigError
from callstate.settings import Settings


def _web(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only the web process needs it

    settings.require_web()
    uvicorn.run(
        "receiver.app:create_app",
        factory=True,
        host=args.host,
        port=settings.port,
        workers=args.workers or settings.web_concurrency,
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
    from callstate.connection import connect  # noqa: PLC0415
    from workers.store import Store  # noqa: PLC0415

    settings.require_web()
    redis = connect(settings, command_timeout=settings.redis_timeout, role="cli")
    Store(redis, settings.retention_seconds).write_schema_version()
    print(f"callstate: configuration ok, Redis ok, schema {keys.SCHEMA_VERSION}")  # noqa: T201
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from callstate import tokens  # noqa: PLC0415

    if not settings.secret_key:
        raise ConfigError("SECRET_KEY", "is not set; read tokens are signed with it")
    print(tokens.issue(settings.secret_key, ttl=args.ttl))  # noqa: T201 - the command's output
    return 0


def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    from workers.sweep import sweep_once  # noqa: PLC0415
    from workers.twilioapi import TwilioAPI  # noqa: PLC0415

    logs.configure(settings.log_format)
    if sweep_once(settings, api=TwilioAPI.from_settings(settings)) is None:
        print("callstate: another sweep is running", file=sys.stderr)  # noqa: T201
        return 1
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
    requeued = 0
    for job_id in registry.get_job_ids():
        try:
            registry.requeue(job_id)
        except (InvalidJobOperation, NoSuchJobError):
            continue  # requeued by someone else meanwhile, or expired
        requeued += 1
    print(f"requeued {requeued} failed job(s) onto {settings.queue_name}")  # noqa: T201
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from callstate.connection import connect  # noqa: PLC0415
    from workers.replay import replay  # noqa: PLC0415
    from workers.store import Store  # noqa: PLC0415

    if not args.all and not args.call_sids:
        raise SystemExit("callstate replay: name CALLSIDs or pass --all")
    logs.configure(settings.log_format)
    redis = connect(settings, command_timeout=settings.redis_timeout, role="cli")
    store = Store(redis, settings.retention_seconds)
    calls, changed = replay(store, None if args.all else args.call_sids)
    print(f"replayed {calls} call(s), {changed} changed")  # noqa: T201
    return 0


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
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
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
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_environ(os.environ)
        code: int = args.run(settings, args)
    except ConfigError as exc:
        print(f"callstate: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except RedisError as exc:
        from callstate.connection import describe_error  # noqa: PLC0415

        print(f"callstate: Redis unavailable: {describe_error(exc)}", file=sys.stderr)  # noqa: T201
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
