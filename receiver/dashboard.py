"""The live page: ``GET /dashboard`` and the few requests it makes (docs/dashboard.md).

- ``GET /dashboard?token=<read token>`` checks the token, keeps it in an HttpOnly, SameSite=Strict
  cookie (Secure when the public URL is https) scoped to the page's path, and redirects to
  ``/dashboard`` so that the token leaves the address bar. No token, or a bad one: 401 and a small
  form to paste one. The cookie is accepted by the routes of this module and by nothing else;
  the read API keeps its bearer tokens.
- ``GET /dashboard/data?view=&offset=&limit=``: the counts, one page of a list (recent, active,
  stuck, or one status; at most :data:`MAX_LIMIT` rows, so 10,000 calls cost what 50 do) and the
  stream position they were read at; ``GET /dashboard/data/calls/{CallSid}``: one call in full
  (its timeline and recordings).
- ``GET /dashboard/events``: Server-Sent Events from the process's one
  :class:`~receiver.livefeed.LiveFeed`, resuming after ``Last-Event-ID`` (or ``?after=``).
- ``GET /dashboard/static/{name}``: the page's script and style sheet (no build step, no CDN).

Every read of the store goes through :class:`callstate.reader.Reader`: the page has no other way
into it. The ingest rate and the lag come from the deployment's counters, read by
:func:`callstate.metrics.read` (as ``GET /metrics`` reads them, the store through the same Reader).
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from importlib.resources import files
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from callstate import metrics, tokens
from callstate.counters import LAG_BUCKETS
from callstate.errors import Forbidden, InvalidQuery, NotFound, Unauthorized
from callstate.event import CALL_SID
from callstate.reader import VIEWS, Change, Reader, StoredCall, check_position
from callstate.status import PUBLISHED_STATUSES
from receiver import livefeed
from receiver.publicurl import public_url
from receiver.resources import Resources

logger = logging.getLogger("callstate.web")

#: The cookie that carries the read token for the page's own requests.
COOKIE: Final = "callstate_dashboard"
#: Rows per page unless the page asks otherwise, and the most it may ask for.
PAGE_SIZE: Final = 50
MAX_LIMIT: Final = 200
#: Offsets beyond this are refused rather than passed to Redis (no index is that long).
MAX_OFFSET: Final = 10_000_000

#: The page may talk to its own origin only: no CDN, no third party, no inline code.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC_TYPES: Final = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _asset(name: str) -> bytes:
    return files("receiver").joinpath("static", name).read_bytes()


def routes() -> list[Route]:
    """The page's routes, to add to the web app. Reads its files now, once, not per request."""
    page = _asset("dashboard.html")
    static = {name: (_asset(name), kind) for name, kind in _STATIC_TYPES.items()}
    snapshots = Snapshots()

    async def data(request: Request) -> Response:
        return await _data(request, snapshots)

    async def dashboard(request: Request) -> Response:
        """The page, or the token exchange, or the 401 form."""
        resources = Resources.of(request)
        secret = resources.settings.secret_key
        token = request.query_params.get("token")
        if token is not None:
            try:
                _whole_deployment(tokens.check(secret, token.strip()))
            except (Unauthorized, Forbidden) as exc:
                return _login(exc.reason, exc.status_code)
            # Relative, so that it stays under a path prefix a proxy strips (PUBLIC_BASE_URL).
            answer = RedirectResponse("dashboard", status_code=303)
            answer.set_cookie(
                COOKIE,
                token.strip(),
                path=_cookie_path(resources),
                secure=public_url(
                    request.scope, resources.settings.public_base_url, resources.trusted
                ).startswith("https:"),
                httponly=True,
                samesite="strict",
            )
            answer.headers["Cache-Control"] = "no-store"
            return answer
        cookie = request.cookies.get(COOKIE)
        try:
            _whole_deployment(tokens.check(secret, cookie or ""))
        except (Unauthorized, Forbidden) as exc:
            return _login(exc.reason if cookie else None, exc.status_code)
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        found = static.get(request.path_params["name"])
        if found is None:
            raise NotFound("no such file")
        body, kind = found
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    return [
        Route("/dashboard", dashboard, methods=["GET"]),
        Route("/dashboard/data", data, methods=["GET"]),
        Route("/dashboard/data/calls/{sid}", call, methods=["GET"]),
        Route("/dashboard/events", events, methods=["GET"]),
        Route("/dashboard/static/{name}", asset, methods=["GET"]),
    ]


def _cookie_path(resources: Resources) -> str:
    base = resources.settings.public_base_url
    prefix = urlsplit(base).path.rstrip("/") if base else ""
    return f"{prefix}/dashboard"


def _login(problem: str | None, status: int = 401) -> HTMLResponse:
    """``status`` (401, or 403 for a token that may not open the page) with a form that sends the
    token the way the page expects it."""
    said = f'<p role="alert">{html.escape(problem)}</p>' if problem else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>callstate: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>callstate live page</h1>{said}
<form method="get" action="dashboard">
<p><label for="token">Read token</label>
<input id="token" name="token" type="password" autocomplete="off" required></p>
<p><button type="submit">Open the page</button></p></form>
<p>Print a token with <code>callstate token</code> (it needs the web process's <code>SECRET_KEY</code>).</p>
</main></body></html>"""
    return HTMLResponse(body, status_code=status, headers=_PAGE_HEADERS)


def _authorize(request: Request) -> Resources:
    """The resources, once the page's cookie holds a valid read token (nothing else counts)."""
    resources = Resources.of(request)
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        raise Unauthorized("open /dashboard?token=<read token> first")
    _whole_deployment(tokens.check(resources.settings.secret_key, cookie))
    return resources


def _whole_deployment(accounts: frozenset[str] | None) -> None:
    """The page shows every account's calls (counts, lists, the change stream), so only a token
    that may read every account opens it; a token scoped to accounts reads the read API only."""
    if accounts is not None:
        raise Forbidden(
            "this read token is scoped to accounts; the live page shows every account's calls and "
            "needs a token without --account"
        )


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))) or not low <= int(raw) <= high:
        raise InvalidQuery(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


class Snapshots:
    """The answers of ``/dashboard/data`` of the last ``ttl`` seconds, by query, shared by the
    pages this process serves: however many pages are open, a list is read at most once per
    ``ttl``. A page loses nothing by an answer up to ``ttl`` old: its rows take newer statuses
    from the stream, and the stream replays from the (older) position in the answer."""

    def __init__(self, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic, size: int = 64) -> None:
        self.ttl = ttl
        self.clock = clock
        self.size = size
        self._answers: dict[tuple[str, int, int], tuple[float, bytes]] = {}

    def get(self, query: tuple[str, int, int]) -> bytes | None:
        found = self._answers.get(query)
        return found[1] if found is not None and found[0] > self.clock() else None

    def put(self, query: tuple[str, int, int], body: bytes) -> None:
        if len(self._answers) >= self.size:
            now = self.clock()
            self._answers = {q: a for q, a in self._answers.items() if a[0] > now}
            if len(self._answers) >= self.size:
                self._answers.clear()
        self._answers[query] = (self.clock() + self.ttl, body)


async def _data(request: Request, snapshots: Snapshots) -> Response:
    """The counts and one page of a list, and the stream position they were read at."""
    resources = _authorize(request)
    reader = resources.reader
    view = request.query_params.get("view", "recent")
    if view not in VIEWS and view not in PUBLISHED_STATUSES:
        choices = ", ".join((*VIEWS, *PUBLISHED_STATUSES))
        raise InvalidQuery(f"view must be one of {choices}", field="view")
    offset = _integer(request, "offset", 0, 0, MAX_OFFSET)
    limit = _integer(request, "limit", PAGE_SIZE, 1, MAX_LIMIT)
    query = (view, offset, limit)
    body = snapshots.get(query)
    if body is None:
        figures = partial(metrics.read, resources.redis, reader, queue_name=resources.settings.queue_name)
        body = orjson.dumps(await run_in_threadpool(snapshot, reader, view, offset, limit, figures))
        snapshots.put(query, body)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def snapshot(
    reader: Reader, view: str, offset: int, limit: int, figures: Callable[[], metrics.Figures]
) -> dict[str, Any]:
    """What ``GET /dashboard/data`` answers (blocking); ``figures`` reads the deployment's."""
    # The position first: every change after it reaches the page over the feed, so nothing
    # that happens while the rest is read can be missed.
    position = reader.last_position()
    counts = reader.counts()
    page = reader.page(view, offset=offset, limit=limit)
    return {
        "position": position,
        "now": reader.clock(),
        "stuck_after": reader.stuck_after,
        "counts": counts.by_status,
        "active": counts.active,
        "stuck": counts.stuck,
        "known": counts.recent,
        "counters": counters(figures()),
        "view": view,
        "offset": page.offset,
        "limit": limit,
        "total": page.total,
        "calls": [row(stored) for stored in page.calls],
    }


def counters(figures: metrics.Figures) -> dict[str, Any]:
    """The deployment-wide counters the page turns into an ingest rate and a lag (README.md,
    "Monitoring"): callbacks accepted (204) so far, and the lag histogram (from the 204 to the
    call's state written): its bucket bounds in seconds and the count in each bucket, the last
    one above the last bound. The page divides the difference between two reads by the time
    between them, so every web process's and worker's work counts, and no process keeps state."""
    return {
        "accepted": sum(count for (_, code), count in figures.callbacks.items() if code == "204"),
        "lag_bounds": list(LAG_BUCKETS),
        "lag_buckets": list(figures.lag_buckets),
    }


def row(stored: StoredCall) -> dict[str, Any]:
    """One call as a row of the page's table: the state's summary fields, no events."""
    state = stored.state
    times = [e["timestamp"] for e in state.get("events", ()) if e.get("timestamp")]
    return {
        "sid": stored.sid,
        "version": stored.version,
        "status": state.get("status"),
        "final": state.get("final", False),
        "direction": state.get("direction"),
        "from": state.get("from"),
        "to": state.get("to"),
        "parent_call_sid": state.get("parent_call_sid"),
        "started": min(times) if times else None,
        "updated_at": state.get("updated_at"),
        "recordings": len(state.get("recordings", ())),
    }


async def call(request: Request) -> Response:
    """One call in full (timeline and recordings) with its version; 400 malformed, 404 unknown."""
    reader = _authorize(request).reader
    sid = request.path_params["sid"]
    if not CALL_SID.fullmatch(sid):
        raise InvalidQuery("CallSid is malformed", field="CallSid")
    stored = await run_in_threadpool(reader.call, sid)
    if stored is None:
        raise NotFound("no such call")
    counts = await run_in_threadpool(reader.deliveries, sid)
    if counts:  # the timeline shows delivery counts when the store has them
        for event in stored.state.get("events", ()):
            event["deliveries"] = counts.get((event.get("sequence_number"), event.get("status")), 0)
    body = {"sid": stored.sid, "version": stored.version, "state": stored.state}
    return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})


async def events(request: Request) -> Response:
    """The page's Server-Sent Events, after ``Last-Event-ID`` (a reconnection) or ``?after=``."""
    resources = _authorize(request)
    after = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if after is not None:
        try:
            check_position(after)
        except ValueError:
            raise InvalidQuery("Last-Event-ID and after must be stream IDs", field="after") from None
    reader, feed = resources.reader, resources.feed

    def read_missed(position: str) -> list[Change]:
        return reader.changes(position, count=livefeed.CATCH_UP + 1)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async with feed.subscribe() as subscription:
                async for chunk in livefeed.event_stream(subscription, read_missed, after):
                    yield chunk
        except RedisError as exc:
            # The page's browser reconnects by itself (the "retry" it was sent).
            logger.warning("live page stream ended: Redis unavailable: %s", type(exc).__name__)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        # X-Accel-Buffering: nginx (deploy/nginx.conf) must pass each event on at once.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
