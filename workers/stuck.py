"""Stuck calls: a call that never became final is asked about over Twilio's REST API.

Twilio retries a callback at most once, and a call canceled while ``queued`` fires no callback at
all (docs/twilio.md, "Lost callbacks"), so a call can stay non-final forever. A call in the ACTIVE
index whose latest event is ``stuck_after`` seconds old is asked about over REST
(:mod:`workers.twilioapi`), oldest first, at most ``limit`` requests per sweep, and not again within
``stuck_after`` (the :data:`SWEPT` zset remembers when each was asked). A terminal answer becomes an
event of source ``rest`` named like a StatusCallback and goes through :meth:`Store.apply` like any
callback; the reducer lets a later callback carrying a ``SequenceNumber`` win over it. A
non-terminal answer or a 404 changes nothing.

Failure policy: an error about *this call* (404, an unreadable answer) is logged and the sweep moves
on; an error about *Twilio or us* (429, 5xx, timeout, refused connection, 401/403) ends the REST
part of this sweep, since every further request would fail the same way. Every ask but a 429 is
recorded in SWEPT, so a call that always fails cannot block the head of the queue; a 429 is not
about the call, which is asked first at the next sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from callstate import compression, keys
from callstate.buckets import merged_oldest
from callstate.errors import InvalidCallback, UnusableAnswer
from callstate.event import Event, parse_callback
from callstate.logs import log_event
from callstate.status import TERMINAL_STATUSES
from workers.prune import members
from workers.store import Store, call_sid_of, tenant_of
from workers.twilioapi import TwilioAPI, TwilioAPIError

logger = logging.getLogger("callstate.sweep")

#: CallSid -> Unix seconds of the last REST request about it (any answer but 429). A call in it
#: is not asked again until ``stuck_after`` has passed; each sweep removes the entries older than
#: that, so it holds only the calls asked in the last ``stuck_after`` seconds.
SWEPT: Final = keys.SWEPT
#: Stuck ACTIVE entries read per round trip (their SWEPT scores and states) while looking for calls
#: to ask.
_SCAN_PAGE: Final = 200
#: At most ``_SCAN_FACTOR * limit`` stuck ACTIVE entries are looked at per sweep: calls asked
#: recently are skipped, and this keeps a long tail of them from making a sweep slow.
_SCAN_FACTOR: Final = 20

#: REST Call resource field -> the StatusCallback parameter it becomes (docs/twilio.md, "The REST Call
#: resource" and "Status callback parameters").
_REST_FIELDS: Final = (
    ("sid", "CallSid"),
    ("account_sid", "AccountSid"),
    ("status", "CallStatus"),
    ("duration", "CallDuration"),
    ("parent_call_sid", "ParentCallSid"),
    ("direction", "Direction"),
    ("from", "From"),
    ("to", "To"),
    ("answered_by", "AnsweredBy"),
)


@dataclass(slots=True)
class StuckCalls:
    """What the REST part of one sweep did; fields of the sweep's log line."""

    #: ACTIVE entries looked at (stuck and not asked recently).
    scanned: int = 0
    #: REST requests made.
    asked: int = 0
    #: Calls a terminal REST answer made final.
    finalized: list[str] = field(default_factory=list)
    #: REST says the call is not over yet.
    still_active: int = 0
    not_found: int = 0
    #: Other per-call failures: transient, credentials, unreadable answer.
    failed: int = 0
    #: Stuck in ACTIVE but not asked: call key expired, already final, or no account/credentials.
    skipped: int = 0
    #: Why the REST part ended early: ``rate_limited``, ``unavailable``, ``credentials``, ``budget``.
    stopped: str | None = None

    def outcomes(self) -> dict[str, int]:
        """The REST requests made, by outcome (``callstate_sweep_requests_total``): they add up to
        :attr:`asked`. The request that stopped the sweep counts under the reason it stopped."""
        stopping = self.stopped if self.stopped in ("rate_limited", "unavailable", "credentials") else None
        outcomes = {
            "final": len(self.finalized),
            "still_active": self.still_active,
            "not_found": self.not_found,
            # The request that stopped the sweep is among `failed` unless it was rate-limited.
            "failed": self.failed - (1 if stopping in ("unavailable", "credentials") else 0),
        }
        if stopping is not None:
            outcomes[stopping] = 1
        return outcomes


def rest_event(resource: Mapping[str, Any], call_sid: str, tenant: str | None = None) -> Event | None:
    """The event a REST Call resource stands for: ``None`` unless its status is terminal.

    Named like a StatusCallback (CallSid, AccountSid, CallStatus, CallDuration, Timestamp,
    ParentCallSid, Direction, From, To, AnsweredBy), source ``rest``, no ``SequenceNumber``, so a
    terminal callback that arrives later outranks it. ``Timestamp`` is ``end_time``, else
    ``date_updated`` (both RFC 2822 as Twilio gives them). Raises :class:`UnusableAnswer` for a resource
    that is not the call asked about or carries malformed SIDs. ``tenant`` is the asked record's:
    the answer goes back to that record.
    """
    if resource.get("sid") != call_sid:
        raise UnusableAnswer("the answer is about another call")
    status = resource.get("status")
    # REST has no `initiated` (docs/twilio.md, "Call statuses"); any non-terminal or unknown status
    # changes nothing.
    if status not in TERMINAL_STATUSES:
        return None
    params = [(name, value) for key, name in _REST_FIELDS if (value := _text(resource.get(key)))]
    timestamp = _text(resource.get("end_time")) or _text(resource.get("date_updated"))
    if timestamp:
        params.append(("Timestamp", timestamp))
    try:
        checked = parse_callback("call", params)
    except InvalidCallback as exc:
        raise UnusableAnswer(exc.reason) from None
    return Event.create("call", checked.params, source="rest", tenant=tenant)


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def ask_stuck(
    store: Store,
    api: TwilioAPI,
    result: StuckCalls,
    *,
    stuck_after: float,
    limit: int,
    now: Callable[[], float],
    budget: float | None,
) -> None:
    """Ask Twilio about up to ``limit`` stuck calls, adding what happened to ``result``.

    ``now`` gives Unix seconds; ``budget`` (seconds) ends the asking early once spent.
    """
    started = now()
    for sid, raw_state in _stuck_calls(store, cutoff=started - stuck_after, limit=limit):
        if result.asked >= limit:
            return
        result.scanned += 1
        state = orjson.loads(raw_state) if raw_state is not None else None
        # An expired call is left to pruning: a REST event would bring back a call we let go.
        account = (state.get("account_sid") or api.account_sid) if state is not None else None
        if state is None or state.get("final") or not account or api.credentials_for(account) is None:
            result.skipped += 1
            continue
        if budget is not None and now() - started >= budget:
            result.stopped = "budget"
            return
        result.asked += 1
        try:
            resource = api.fetch_call(account, call_sid_of(sid))
        except TwilioAPIError as exc:
            if exc.rate_limited:
                log_event(
                    logger, "sweep_rate_limited", logging.WARNING, call_sid=sid, retry_after=exc.retry_after
                )
                result.stopped = "rate_limited"
                return
            store.redis.zadd(SWEPT, {sid: now()})
            if exc.not_found:
                result.not_found += 1
                log_event(logger, "sweep_call_not_found", logging.WARNING, call_sid=sid)
                continue
            result.failed += 1
            level = logging.ERROR if exc.credentials else logging.WARNING
            log_event(
                logger, "sweep_call_failed", level, call_sid=sid, http_status=exc.status, reason=exc.reason
            )
            if exc.transient or exc.credentials:
                result.stopped = "credentials" if exc.credentials else "unavailable"
                return
            continue
        store.redis.zadd(SWEPT, {sid: now()})
        try:
            event = rest_event(resource, call_sid_of(sid), tenant_of(sid))
        except UnusableAnswer as exc:
            result.failed += 1
            log_event(logger, "sweep_call_failed", logging.WARNING, call_sid=sid, reason=str(exc))
            continue
        if event is None:
            result.still_active += 1
            continue
        store.apply([event])
        result.finalized.append(sid)
        log_event(logger, "sweep_call_final", call_sid=sid, status=event.status)


def _stuck_calls(store: Store, *, cutoff: float, limit: int) -> Iterator[tuple[str, bytes | None]]:
    """(CallSid, stored state or None) of ACTIVE calls scored at or before ``cutoff`` and absent from
    SWEPT, oldest first, among the first ``_SCAN_FACTOR * limit`` such ACTIVE entries.

    The entries are read at once: paging by offset would skip some as the sweep removes the calls
    it finalizes from ACTIVE. States are read a page at a time, as the caller needs them.
    """
    redis = store.redis
    oldest = merged_oldest(redis, keys.active, store.buckets, newest=cutoff, limit=_SCAN_FACTOR * limit)
    stuck = members(member for member, _ in oldest)
    for offset in range(0, len(stuck), _SCAN_PAGE):
        page = stuck[offset : offset + _SCAN_PAGE]
        asked = redis.zmscore(SWEPT, page)
        fresh = [sid for sid, score in zip(page, asked, strict=True) if score is None]
        pipe = redis.pipeline(transaction=False)
        for sid in fresh:
            pipe.hget(keys.call(sid), "state")
        for sid, state in zip(fresh, pipe.execute(), strict=True):
            yield sid, None if state is None else compression.state_json(state)
