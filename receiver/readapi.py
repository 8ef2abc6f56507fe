"""The read API: ``GET /calls/{CallSid}`` and ``GET /calls``, behind a read token.

Both answer the stored state JSON as the workers wrote it (docs/contracts.md, "The reconciled call"),
so the API and a dashboard reading Redis directly see the same bytes. Redis calls are blocking and
run on a thread.
"""

from __future__ import annotations

from typing import Final, cast

import orjson
from redis import Redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from callstate import keys, tokens
from callstate.errors import InvalidQuery, NotFound
from callstate.event import CALL_SID
from callstate.status import PUBLISHED_STATUSES
from receiver.resources import Resources

MAX_LIMIT: Final = 1000
_FINAL_VALUES: Final = {"true": True, "1": True, "false": False, "0": False}


def _authorize(request: Request) -> Resources:
    """The process's resources, once the request carries a valid read token."""
    resources = Resources.of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    tokens.check(resources.settings.secret_key, token.strip() if scheme.lower() == "bearer" else "")
    return resources


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def get_call(request: Request) -> Response:
    """One call's state; 400 for a malformed SID, 404 for an unknown one."""
    redis = _authorize(request).redis
    sid = request.path_params["sid"]
    if not CALL_SID.fullmatch(sid):
        raise InvalidQuery("CallSid is malformed", field="CallSid")
    state = cast(bytes | None, await run_in_threadpool(redis.hget, keys.call(sid), "state"))
    if state is None:
        raise NotFound("no such call")
    return _json(state)


async def list_calls(request: Request) -> Response:
    """``{"calls": [...]}`` newest first, filtered by ``status``, ``final``; ``limit`` <= 1000."""
    redis = _authorize(request).redis
    query = request.query_params
    raw_limit = query.get("limit", "100")
    plain = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= len(str(MAX_LIMIT))
    if not plain or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    raw_final = query.get("final")
    if raw_final is not None and raw_final.lower() not in _FINAL_VALUES:
        raise InvalidQuery("final must be true or false", field="final")
    final = None if raw_final is None else _FINAL_VALUES[raw_final.lower()]
    status = query.get("status") or None
    if status is not None and status not in PUBLISHED_STATUSES:
        raise InvalidQuery(f"status must be one of {', '.join(PUBLISHED_STATUSES)}", field="status")
    states = await run_in_threadpool(_recent_states, redis, status, final, int(raw_limit))
    return _json(b'{"calls":[' + b",".join(states) + b"]}")


def _recent_states(redis: Redis, status: str | None, final: bool | None, limit: int) -> list[bytes]:
    """States newest first from the narrowest index; a page at a time, filtered on ``final``."""
    if status is not None:
        index = keys.by_status(status)
    elif final is False:
        index = keys.ACTIVE
    else:
        index = keys.RECENT
    out: list[bytes] = []
    start, page = 0, max(limit, 100)
    while len(out) < limit:
        sids = cast(list[bytes], redis.zrevrange(index, start, start + page - 1))
        if not sids:
            break
        start += page
        pipe = redis.pipeline(transaction=False)
        for sid in sids:
            pipe.hget(keys.call(sid.decode()), "state")
        for state in pipe.execute():
            if state is None:  # expired since it was indexed
                continue
            if final is not None and orjson.loads(state)["final"] is not final:
                continue
            out.append(state)
            if len(out) == limit:
                break
    return out
