"""``callstate watch``: print the store's changes as they happen, one line each.

A line is ``<time of the change> <CallSid> v<version> <status>[ final] <position>``; the position
(a stream ID) is the last word so that a script can resume with ``--since`` where it stopped.
Everything goes through :class:`callstate.reader.Follower`: repeats are dropped by the per-call
version rule, and a Redis restart is a pause (said once on stderr), not an exit.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Final, TextIO

from callstate import keys
from callstate.connection import connect_store
from callstate.reader import Change, Follower, Reader
from callstate.settings import Settings

#: Seconds one read waits for a change; short enough that Ctrl-C is prompt.
BLOCK: Final = 5.0


def line(change: Change) -> str:
    """How ``watch`` prints one change."""
    millis = int(change.id.partition("-")[0])
    when = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
    status = (change.status or "none") + (" final" if change.final else "")
    return f"{when.replace('+00:00', 'Z')} {change.call_sid} v{change.version} {status} {change.id}"


def watch(settings: Settings, *, since: str, count: int | None, out: TextIO = sys.stdout) -> int:
    """Print changes after position ``since`` (``$``: from now on) until ``count`` were printed
    (forever when None). Exit status 0."""
    # The blocking read holds its connection for up to BLOCK seconds: the command timeout must
    # be longer, or every quiet moment would look like a lost connection.
    reader = Reader(connect_store(settings, command_timeout=BLOCK + settings.redis_timeout, role="watch"))
    follower = Follower(reader, since)
    version = reader.schema_version()
    if version is not None and version != keys.SCHEMA_VERSION:
        print(  # noqa: T201
            f"callstate watch: the store has schema {version}, this reader knows {keys.SCHEMA_VERSION}",
            file=sys.stderr,
        )
    printed, was_connected = 0, True
    while count is None or printed < count:
        changes = follower.poll(block=BLOCK, count=count - printed if count else 500)
        if follower.connected != was_connected:
            was_connected = follower.connected
            state = "back" if was_connected else "unavailable, retrying"
            print(f"callstate watch: Redis {state}", file=sys.stderr, flush=True)  # noqa: T201
        for change in changes:
            print(line(change), file=out, flush=True)
            printed += 1
    return 0
