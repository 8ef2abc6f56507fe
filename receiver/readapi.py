"""The read API: ``GET /calls/{CallSid}`` and ``GET /calls``, behind a read token.

Both answer the stored state JSON as the workers wrote it (docs/contracts.md, "The reconciled call"),
so the API and a dashboard reading Redis directly see the same bytes. Redis calls are blocking and
run on a thread.

A read token may be scoped to accounts (``callstate token --account AC…``): it then sees the calls
whose record belongs to one of them, that is tenant records of those accounts and main-account
records whose ``account_sid`` is one of them (docs/redis-schema.md, "Tenants"). An unscoped token
sees every record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, cast

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from callstate import compression, keys, tokens
from callstate.buckets import merged_page
from callstate.connection import StoreClient, StoreHandle
from callstate.errors import Conflict, InvalidQuery, NotFound
from callstate.event import CALL_SID
from callstate.status import PUBLISHED_STATUSES
from receiver.resources import Resources

MAX_LIMIT: Final = 1000
_FINAL_VALUES: Final = {"true": True, "1": True, "false": False, "0": False}


def _authorize(request: Request) -> tuple[Resources, frozenset[str] | None]:
    """The process's resources and the accounts the request's read token may read (``None``:
    all), once the request carries a valid read token."""
    resources = Resources.of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    scope = tokens.check(resources.settings.secret_key, token.strip() if scheme.lower() == "bearer" else "")
    return resources, scope


def _visible(record: str, state: bytes, scope: frozenset[str] | None) -> bool:
    """Whether a token of ``scope`` may read the call ``record`` whose stored state is ``state``."""
    if scope is None:
        return True
    tenant = record.partition(":")[2]
    if tenant:
        return tenant in scope
    return orjson.loads(state).get("account_sid") in scope


def _states(redis: StoreClient, records: Sequence[str]) -> list[bytes | None]:
    pipe = redis.pipeline(transaction=False)
    for record in records:
        pipe.hget(keys.call(record), "state")
    stored = cast(list[bytes | None], pipe.execute())
    return [None if state is None else compression.state_json(state) for state in stored]


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def get_call(request: Request) -> Response:
    """One call's state; 400 for a malformed SID, 404 for an unknown (or invisible) one.

    The main account's record comes first; else the one tenant record the token may read. Two
    tenants' records of one CallSid (one of them made it up) are a 409 unless the token is scoped
    to one of them.
    """
    resources, scope = _authorize(request)
    sid = request.path_params["sid"]
    if not CALL_SID.fullmatch(sid):
        raise InvalidQuery("CallSid is malformed", field="CallSid")
    tenants = resources.settings.subaccount_tokens if scope is None else scope
    records = [sid, *(keys.record(sid, tenant) for tenant in sorted(tenants))]
    states = await run_in_threadpool(lambda: _states(resources.store.client(), records))
    found = [
        (record, state)
        for record, state in zip(records, states, strict=True)
        if state is not None and _visible(record, state, scope)
    ]
    if not found:
        raise NotFound("no such call")
    if found[0][0] != sid and len(found) > 1:
        raise Conflict("several accounts report this call; use a read token scoped to one account")
    return _json(found[0][1])


async def list_calls(request: Request) -> Response:
    """``{"calls": [...]}`` newest first, filtered by ``status``, ``final``; ``limit`` <= 1000."""
    resources, scope = _authorize(request)
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
    states = await run_in_threadpool(_recent_states, resources.store, status, final, int(raw_limit), scope)
    return _json(b'{"calls":[' + b",".join(states) + b"]}")


def _recent_states(
    store: StoreHandle, status: str | None, final: bool | None, limit: int, scope: frozenset[str] | None
) -> list[bytes]:
    """States newest first from the narrowest index (ACTIVE, FINAL, a status), its buckets merged
    (callstate.buckets); a page at a time, filtered on ``final`` and on the token's scope."""
    index: Callable[[int], str]
    if status is not None:
        index = partial(keys.by_status, status)
    elif final is False:
        index = keys.active
    elif final is True:
        index = keys.final
    else:
        index = keys.recent
    redis, buckets = store.client(), store.buckets()
    out: list[bytes] = []
    start, page = 0, max(limit, 100)
    while len(out) < limit:
        entries = merged_page(redis, index, buckets, offset=start, limit=page)
        records = [member.decode() for member, _ in entries]
        if not records:
            break
        start += page
        for record, state in zip(records, _states(redis, records), strict=True):
            if state is None:  # expired since it was indexed
                continue
            # Also with ACTIVE and FINAL: a state may be briefly newer than its index entries.
            if final is not None and orjson.loads(state)["final"] is not final:
                continue
            if not _visible(record, state, scope):
                continue
            out.append(state)
            if len(out) == limit:
                break
    return out
