"""The live page's HTTP contract, in process: docs/dashboard.md, "Opening it" and
"For scripts and tests (a contract)".

Auth by a read token exchanged for a cookie that only the page's routes accept; the data it reads
(a page of a list and the counts, never everything); refusals with a status and a reason. The
page itself, live, is tested in a real browser in test_dashboard_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie

import pytest
import redis
from starlette.testclient import TestClient

from callstate import keys, tokens
from callstate.counters import LAG_BUCKETS, LAG_FIELDS, callback_field
from callstate.event import parse_callback
from callstate.reader import Reader
from callstate.settings import Settings
from receiver.app import create_app
from receiver.dashboard import COOKIE, Snapshots
from tests.redisserver import RedisServer
from tests.twiliosign import CALLED_AT, TOKEN, call_params, call_sid
from workers.store import Store

KEY = "dashboard-secret-key-0123456789abcdefghij"


def app_client(redis_server: RedisServer, public_base_url: str | None = None) -> TestClient:
    settings = Settings(
        redis_url=redis_server.url, auth_token=TOKEN, secret_key=KEY, public_base_url=public_base_url
    )
    return TestClient(create_app(settings), follow_redirects=False)


@pytest.fixture
def client(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[TestClient]:
    with app_client(redis_server) as test_client:
        yield test_client


@pytest.fixture
def signed_in(client: TestClient) -> TestClient:
    client.cookies.set(COOKIE, tokens.issue(KEY, ttl=600))
    return client


def store_calls(client: redis.Redis, outcomes: dict[str, tuple[str, ...]]) -> None:
    store = Store(client, 86_400, clock=lambda: CALLED_AT)
    store.apply(
        [
            parse_callback("call", call_params(sid, status, n))
            for sid, statuses in outcomes.items()
            for n, status in enumerate(statuses)
        ]
    )


class TestSignIn:
    def test_without_a_token_the_page_is_a_401_form(self, client: TestClient) -> None:
        """No token and no cookie: 401 with a form that sends `token` to the page."""
        answer = client.get("/dashboard")
        assert answer.status_code == 401
        assert answer.headers["content-type"].startswith("text/html")
        assert '<form method="get" action="dashboard">' in answer.text
        assert 'name="token"' in answer.text
        assert 'role="alert"' not in answer.text  # nothing went wrong yet

    @pytest.mark.parametrize(
        ("token", "reason"),
        [
            ("not-a-token", "read token is invalid"),
            (tokens.issue("another-key-" + KEY, ttl=60), "read token is invalid"),
            (tokens.issue(KEY, ttl=60, now=lambda: 0), "read token has expired"),
        ],
    )
    def test_a_bad_token_is_a_401_form_saying_why(self, client: TestClient, token: str, reason: str) -> None:
        """A wrong, foreign or expired token: 401, the form again, the reason, and no cookie."""
        answer = client.get("/dashboard", params={"token": token})
        assert answer.status_code == 401
        assert f'<p role="alert">{reason}</p>' in answer.text
        assert "set-cookie" not in answer.headers

    def test_a_token_becomes_a_strict_http_only_cookie_and_a_redirect(self, client: TestClient) -> None:
        """A good token: 303 to the page itself (the token leaves the address bar) and a cookie
        that scripts cannot read and other sites cannot send; not Secure over plain http."""
        token = tokens.issue(KEY, ttl=600)
        answer = client.get("/dashboard", params={"token": token})
        assert answer.status_code == 303
        assert answer.headers["location"] == "dashboard"
        cookie = SimpleCookie(answer.headers["set-cookie"])[COOKIE]
        assert cookie.value == token
        assert cookie["httponly"] is True
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/dashboard"
        assert not cookie["secure"]
        page = client.get("/dashboard")
        assert page.status_code == 200
        assert '<tbody id="calls">' in page.text

    def test_under_an_https_public_url_the_cookie_is_secure_and_under_its_prefix(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """PUBLIC_BASE_URL https with a path prefix: Secure, and scoped to the prefixed page."""
        with app_client(redis_server, public_base_url="https://calls.example.com/ops") as client:
            answer = client.get("/dashboard", params={"token": tokens.issue(KEY, ttl=600)})
        cookie = SimpleCookie(answer.headers["set-cookie"])[COOKIE]
        assert cookie["secure"] is True
        assert cookie["path"] == "/ops/dashboard"

    def test_the_page_keeps_to_its_origin(self, signed_in: TestClient) -> None:
        """The page's Content-Security-Policy allows its own origin only, and no inline script."""
        policy = signed_in.get("/dashboard").headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        for name in ("script-src", "style-src", "connect-src", "img-src"):
            assert directives[name] == "'self'"


class TestCookieScope:
    def test_the_page_data_takes_the_cookie_and_not_a_bearer_token(self, client: TestClient) -> None:
        """/dashboard/data answers 401 to an Authorization header, 200 with the cookie."""
        token = tokens.issue(KEY, ttl=600)
        assert client.get("/dashboard/data", headers={"authorization": f"Bearer {token}"}).status_code == 401
        client.cookies.set(COOKIE, token)
        assert client.get("/dashboard/data").status_code == 200

    def test_the_read_api_does_not_take_the_cookie(self, signed_in: TestClient) -> None:
        """Nothing but the page accepts the cookie as auth: the read API wants its bearer token."""
        assert signed_in.get("/calls").status_code == 401
        assert signed_in.get(f"/calls/{call_sid(1)}").status_code == 401

    def test_a_forged_cookie_is_refused_everywhere_on_the_page(self, client: TestClient) -> None:
        """Every data route checks the cookie's token, not merely its presence."""
        client.cookies.set(COOKIE, tokens.issue("another-key-" + KEY, ttl=600))
        for path in (
            "/dashboard",
            "/dashboard/data",
            f"/dashboard/data/calls/{call_sid(1)}",
            "/dashboard/events",
        ):
            assert client.get(path).status_code == 401, path

    def test_a_token_scoped_to_accounts_does_not_open_the_page(self, client: TestClient) -> None:
        """The page shows every account's calls: a token scoped to some accounts (which the read
        API honours) gets 403 saying why, on the token exchange and on every data route."""
        scoped = tokens.issue(KEY, ttl=600, accounts=["AC" + "1" * 32])
        exchange = client.get("/dashboard", params={"token": scoped}, follow_redirects=False)
        assert exchange.status_code == 403
        assert "scoped to accounts" in exchange.text
        assert COOKIE not in exchange.cookies
        client.cookies.set(COOKIE, scoped)
        for path in (
            "/dashboard",
            "/dashboard/data",
            f"/dashboard/data/calls/{call_sid(1)}",
            "/dashboard/events",
        ):
            answer = client.get(path)
            assert answer.status_code == 403, path
            assert "scoped to accounts" in answer.text, path


class TestData:
    def test_a_page_of_rows_counts_and_the_position_as_the_reader_sees_them(
        self, signed_in: TestClient, redis_client: redis.Redis
    ) -> None:
        """/dashboard/data: the reader's counts and page, as rows, with the stream's position."""
        store_calls(
            redis_client,
            {
                call_sid(1): ("initiated", "ringing"),
                call_sid(2): ("initiated", "busy"),
                call_sid(3): ("initiated",),
            },
        )
        body = signed_in.get("/dashboard/data", params={"view": "active"}).json()
        reader = Reader(redis_client)
        counts = reader.counts()
        assert body["counts"] == counts.by_status
        assert (body["active"], body["known"]) == (2, 3)
        assert body["position"] == reader.last_position()
        assert [row["sid"] for row in body["calls"]] == [call.sid for call in reader.page("active").calls]
        first = body["calls"][0]
        assert first == {
            "sid": call_sid(1),
            "version": 1,
            "status": "ringing",
            "final": False,
            "direction": "outbound-api",
            "from": "+15005550001",
            "to": "+15005550006",
            "parent_call_sid": None,
            "started": "2026-09-01T12:00:00Z",
            "updated_at": "2026-09-01T12:00:01Z",
            "recordings": 0,
        }
        assert body["counters"] == {
            "accepted": 0,
            "lag_bounds": list(LAG_BUCKETS),
            "lag_buckets": [0] * (len(LAG_BUCKETS) + 1),
        }

    def test_the_counters_are_the_deployments(self, signed_in: TestClient, redis_client: redis.Redis) -> None:
        """Callbacks accepted (204s of both endpoints, nothing else) and the lag histogram, as
        every web and worker process added them up in Redis (README.md, "Monitoring")."""
        redis_client.hincrby(keys.METRICS, callback_field("call-status", 204), 7)
        redis_client.hincrby(keys.METRICS, callback_field("recording-status", 204), 2)
        redis_client.hincrby(keys.METRICS, callback_field("call-status", 403), 5)
        redis_client.hincrby(keys.METRICS, LAG_FIELDS[1], 8)
        redis_client.hincrby(keys.METRICS, LAG_FIELDS[-1], 1)
        counters = signed_in.get("/dashboard/data").json()["counters"]
        assert counters["accepted"] == 9
        assert counters["lag_buckets"] == [0, 8] + [0] * (len(LAG_BUCKETS) - 2) + [1]

    def test_ten_thousand_calls_are_served_a_page_at_a_time(
        self, signed_in: TestClient, redis_client: redis.Redis
    ) -> None:
        """With 10,000 calls stored, a page carries `limit` rows and the total, never all."""
        store = Store(redis_client, 86_400, clock=lambda: CALLED_AT)
        for start in range(0, 10_000, 1000):
            store.apply(
                [
                    parse_callback("call", call_params(call_sid(n), "ringing", 0))
                    for n in range(start, start + 1000)
                ]
            )
        answer = signed_in.get("/dashboard/data", params={"offset": "9990", "limit": "50"})
        body = answer.json()
        assert (body["total"], len(body["calls"]), body["counts"]["ringing"]) == (10_000, 10, 10_000)
        full = signed_in.get("/dashboard/data", params={"limit": "200"})
        assert len(full.json()["calls"]) == 200
        assert len(full.content) < 100_000

    def test_one_call_in_full(self, signed_in: TestClient, redis_client: redis.Redis) -> None:
        """/dashboard/data/calls/{sid}: the stored state (timeline, recordings) and its version,
        each timeline entry with how often Twilio delivered it."""
        store_calls(redis_client, {call_sid(7): ("initiated", "ringing", "in-progress", "completed")})
        store_calls(redis_client, {call_sid(7): ("initiated", "ringing")})  # both delivered again
        body = signed_in.get(f"/dashboard/data/calls/{call_sid(7)}").json()
        stored = Reader(redis_client).call(call_sid(7))
        assert stored is not None
        assert [e.pop("deliveries") for e in body["state"]["events"]] == [2, 2, 1, 1]
        assert body == {"sid": call_sid(7), "version": stored.version, "state": stored.state}
        assert [e["status"] for e in body["state"]["events"]] == [
            "initiated",
            "ringing",
            "in-progress",
            "completed",
        ]
        assert signed_in.get(f"/dashboard/data/calls/{call_sid(8)}").status_code == 404

    @pytest.mark.parametrize(
        ("path", "params", "field"),
        [
            ("/dashboard/data", {"view": "everything"}, "view"),
            ("/dashboard/data", {"view": "callstate:{callstate}:published"}, "view"),
            ("/dashboard/data", {"offset": "-1"}, "offset"),
            ("/dashboard/data", {"limit": "0"}, "limit"),
            ("/dashboard/data", {"limit": "201"}, "limit"),
            ("/dashboard/data", {"limit": "½"}, "limit"),
            ("/dashboard/data/calls/CA123", {}, "CallSid"),
            ("/dashboard/events", {"after": "yesterday"}, "after"),
        ],
    )
    def test_a_bad_query_is_a_400_naming_it(
        self, signed_in: TestClient, path: str, params: dict[str, str], field: str
    ) -> None:
        """Malformed parameters are refused with 400 and a reason naming them, never a 500."""
        answer = signed_in.get(path, params=params)
        assert answer.status_code == 400
        assert field in answer.text


class TestSnapshots:
    def test_an_answer_is_shared_for_its_ttl_then_read_again(self) -> None:
        """Within ttl seconds the same query gets the stored answer; after, none (read again)."""
        now = [100.0]
        snapshots = Snapshots(ttl=1.0, clock=lambda: now[0])
        snapshots.put(("recent", 0, 50), b"first")
        now[0] += 0.9
        assert snapshots.get(("recent", 0, 50)) == b"first"
        assert snapshots.get(("active", 0, 50)) is None
        now[0] += 0.2
        assert snapshots.get(("recent", 0, 50)) is None

    def test_it_never_holds_more_than_its_size(self) -> None:
        """Answers of many different queries do not pile up."""
        snapshots = Snapshots(ttl=60, clock=lambda: 0.0, size=4)
        for offset in range(10):
            snapshots.put(("recent", offset, 50), b"x")
        assert len(snapshots._answers) <= 4


class TestFiles:
    @pytest.mark.parametrize(
        ("name", "kind"),
        [
            ("dashboard.js", "text/javascript"),
            ("dashboard.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ],
    )
    def test_the_page_files_are_served_by_the_app(self, client: TestClient, name: str, kind: str) -> None:
        """Script, style sheet and icon come from the app itself (no CDN, no build step)."""
        answer = client.get(f"/dashboard/static/{name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(kind)

    def test_nothing_else_is_served_from_there(self, client: TestClient) -> None:
        """Only the listed files: no path walks out of the static folder."""
        assert client.get("/dashboard/static/dashboard.html").status_code == 404
        assert client.get("/dashboard/static/..%2Fdashboard.py").status_code == 404
