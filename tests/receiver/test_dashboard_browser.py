"""The live page in a real browser (Chromium, Selenium), against the Procfile's real processes.

One browser and one set of processes for the module: `web` (the page's origin), a second `web`
that takes callbacks while the first is down, and a `worker`. Signed callbacks go in over HTTP;
the page must show them without a reload, agree with the read API, catch up after its event
stream is cut, log no console error and request nothing outside its origin.

Cost: one Chromium and three processes, about 15 s on the 2-core project machine.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import redis
from selenium.webdriver.common.by import By

from callstate import tokens
from callstate.reader import Reader
from callstate.status import PUBLISHED_STATUSES
from tests.browser import Browser
from tests.procs import ROOT, Process, environment, start_web, start_worker
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import ACCOUNT, TOKEN, call_params, call_sid, form_request

SECRET = "browser-test-secret-key-0123456789abcdef"
#: Where the screenshot goes (gitignored); docs/dashboard.png is a copy of one, for the README.
ARTIFACTS = ROOT / "artifacts"


@dataclass
class Site:
    """The processes behind the page, and how to reach them."""

    env: dict[str, str]
    directory: Path
    port: int
    web: Process
    spare_port: int
    spare: Process
    worker: Process
    token: str
    redis: redis.Redis

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restart_web(self) -> None:
        self.web = start_web({**self.env, "PORT": str(self.port)}, self.directory / "again", self.port)


@pytest.fixture(scope="module")
def site(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    redis_server.client().flushall()
    directory = tmp_path_factory.mktemp("site")
    (directory / "again").mkdir()
    port, spare_port = free_port(), free_port()
    env = environment(REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN=TOKEN, SECRET_KEY=SECRET)
    web = start_web({**env, "PORT": str(port)}, directory, port)
    spare = start_web({**env, "PORT": str(spare_port)}, directory / "again", spare_port)
    worker = start_worker(env, directory)
    client = redis_server.client()
    site = Site(env, directory, port, web, spare_port, spare, worker, tokens.issue(SECRET, ttl=3600), client)
    yield site
    for process in (site.web, site.spare, site.worker):
        process.stop(signal.SIGKILL if process is not site.worker else signal.SIGTERM)
    redis_server.client().flushall()


@pytest.fixture(scope="module")
def browser(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    browser = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    # Quit before the processes stop: an open event stream holds up a graceful shutdown.
    browser.quit()


def now_params(sid: str, status: str, sequence: int, **extra: str) -> list[tuple[str, str]]:
    """A StatusCallback body stamped with the current time (the page shows ages)."""
    stamp = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return [(k, v) for k, v in call_params(sid, status, sequence, **extra) if k != "Timestamp"] + [
        ("Timestamp", stamp)
    ]


def recording_params(sid: str) -> list[tuple[str, str]]:
    return [
        ("AccountSid", ACCOUNT),
        ("CallSid", sid),
        ("RecordingSid", "RE" + sid[2:]),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "14"),
        ("RecordingChannels", "2"),
        ("RecordingSource", "OutboundAPI"),
        ("RecordingUrl", f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE{sid[2:]}"),
    ]


def post(base: str, path: str, params: list[tuple[str, str]]) -> None:
    body, headers = form_request(base + path, params)
    answer = httpx.post(base + path, content=body, headers=headers)
    assert answer.status_code == 204, answer.text


# Read in one script each: the page re-renders its rows, so an element found by one WebDriver call
# may be gone by the next.
def row_status(browser: Browser, sid: str) -> str | None:
    status: str | None = browser.script(
        "const row = document.querySelector(`#calls [data-call-sid='${arguments[0]}']`);"
        "return row ? row.getAttribute('data-status') : null;",
        sid,
    )
    return status


def page_counts(browser: Browser) -> dict[str, int]:
    counts: dict[str, str] = browser.script(
        "return Object.fromEntries([...document.querySelectorAll('[data-count-status]')]"
        ".map((e) => [e.getAttribute('data-count-status'), e.textContent]));"
    )
    return {status: int(text) for status, text in counts.items()}


def api_counts(site: Site) -> dict[str, int]:
    auth = {"authorization": f"Bearer {site.token}"}
    return {
        status: len(
            httpx.get(f"{site.base}/calls", params={"status": status, "limit": "1000"}, headers=auth).json()[
                "calls"
            ]
        )
        for status in PUBLISHED_STATUSES
    }


def open_page(browser: Browser, site: Site) -> None:
    browser.driver.get(f"{site.base}/dashboard?token={site.token}")
    browser.wait(lambda d: "Live" in d.find_element(By.ID, "live").text, "the page to go live")


def test_without_a_token_the_page_refuses_and_offers_a_form(browser: Browser, site: Site) -> None:
    """No token: the 401 form; a wrong one pasted: the form again with the reason; the right one:
    the page, with the token gone from the address bar and out of reach of scripts."""
    browser.driver.get(f"{site.base}/dashboard")
    assert browser.driver.find_element(By.TAG_NAME, "h1").text == "callstate live page"
    field = browser.driver.find_element(By.ID, "token")
    field.send_keys("not-a-token")
    browser.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    alert = browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), "the refusal")
    assert alert[0].text == "read token is invalid"
    browser.driver.find_element(By.ID, "token").send_keys(site.token)
    browser.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    browser.wait(lambda d: d.find_elements(By.ID, "calls"), "the page")
    assert browser.driver.current_url == f"{site.base}/dashboard"
    assert browser.script("return document.cookie") == ""  # HttpOnly
    # The two 401s of this test are console errors by Chrome's account; what follows must have none.
    browser.collect()
    browser.console.clear()


def test_signed_callbacks_show_up_live_and_the_counts_match_the_read_api(
    browser: Browser, site: Site
) -> None:
    """Callbacks sent while the page is open change its rows without a reload; its counts end up
    equal to the read API's; a call's timeline and recordings open on demand."""
    open_page(browser, site)
    browser.script("window.sameDocument = true")
    older, sid = call_sid(0xB0), call_sid(0xB1)
    post(site.base, "/twilio/call-status", now_params(older, "initiated", 0))
    post(site.base, "/twilio/call-status", now_params(older, "busy", 1))
    for sequence, status in enumerate(("initiated", "ringing", "in-progress")):
        post(site.base, "/twilio/call-status", now_params(sid, status, sequence))
        browser.wait(lambda _: row_status(browser, sid) == status, f"{sid} to show {status}")  # noqa: B023
    post(site.base, "/twilio/recording-status", recording_params(sid))
    post(site.base, "/twilio/call-status", now_params(sid, "completed", 3, CallDuration="42"))
    browser.wait(lambda _: row_status(browser, sid) == "completed", "the call to complete")
    browser.wait(lambda _: row_status(browser, older) == "busy", "the older call")
    assert browser.script("return window.sameDocument") is True  # never reloaded

    browser.wait(lambda _: page_counts(browser) == api_counts(site), "the counts to match the read API")
    assert page_counts(browser)["completed"] == 1
    # The rate and the lag, from the deployment's counters read since the page opened.
    browser.wait(
        lambda d: (
            re.fullmatch(r"\d+\.\d callbacks/s \(last \d+ s\)", d.find_element(By.ID, "rate").text)
            and d.find_element(By.ID, "lag").text.startswith("p50 ")
        ),
        "the ingest rate and the lag",
    )

    browser.driver.find_element(By.CSS_SELECTOR, f'#calls [data-call-sid="{sid}"] button').click()
    browser.wait(
        lambda d: (
            d.find_element(By.ID, "detail").is_displayed()
            and len(d.find_elements(By.CSS_SELECTOR, "#recordings tr")) == 1
        ),
        "the call's detail",
    )
    timeline = [row.text.split()[:2] for row in browser.driver.find_elements(By.CSS_SELECTOR, "#timeline tr")]
    assert timeline == [["0", "initiated"], ["1", "ringing"], ["2", "in-progress"], ["3", "completed"]]
    head = [cell.text for cell in browser.driver.find_elements(By.CSS_SELECTOR, "#timeline-head th")]
    assert head == ["Sequence", "Status", "Twilio time", "Source", "Deliveries"]
    deliveries = [
        row.text.split()[-1] for row in browser.driver.find_elements(By.CSS_SELECTOR, "#timeline tr")
    ]
    assert deliveries == ["1", "1", "1", "1"]
    link = browser.driver.find_element(By.CSS_SELECTOR, "#recordings a")
    assert link.get_attribute("href") == dict(recording_params(sid))["RecordingUrl"]

    ARTIFACTS.mkdir(exist_ok=True)
    browser.driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert browser.errors() == []


def test_a_dropped_event_stream_catches_up(browser: Browser, site: Site) -> None:
    """The page's web process dies; callbacks go on through another; when the first is back,
    the page resumes its event stream after the last event it had (Last-Event-ID when the
    browser's own retry gets through; ?after= when it gave up and the page reconnected) and shows
    what happened meanwhile."""
    open_page(browser, site)
    sid = call_sid(0xB2)
    post(site.base, "/twilio/call-status", now_params(sid, "initiated", 0))
    browser.wait(lambda _: row_status(browser, sid) == "initiated", "the call before the drop")
    # The page shows the change: it has had the stream's newest entry, which is that change's.
    seen = Reader(site.redis).last_position()
    site.web.stop(signal.SIGKILL)
    browser.wait(lambda d: "Live" not in d.find_element(By.ID, "live").text, "the page to notice")
    spare = f"http://127.0.0.1:{site.spare_port}"
    post(spare, "/twilio/call-status", now_params(sid, "ringing", 1))
    post(spare, "/twilio/call-status", now_params(call_sid(0xB3), "queued", 0))
    site.restart_web()
    browser.wait(lambda _: row_status(browser, sid) == "ringing", "the missed change")
    browser.wait(lambda _: row_status(browser, call_sid(0xB3)) == "queued", "the call made meanwhile")
    # The rows may come back through a data read before the stream does: wait for the stream too.
    browser.wait(
        lambda _: any(
            headers.get("last-event-id") == seen or url.endswith(f"?after={seen}")
            for url, headers in browser.requests("/dashboard/events")
        ),
        f"the page to resume its stream after {seen}",
    )
    # While the process was down, requests to it failed (the console says so); nothing else.
    unexpected = [e for e in browser.errors() if site.base not in e["message"]]
    assert unexpected == []


def test_no_request_left_the_origin(browser: Browser, site: Site) -> None:
    """Over the whole session, every URL the page loaded or called is on its own origin."""
    # Over the network, that is: the browser's own chrome:// pages (the blank tab it starts
    # with) are not requests.
    urls = [url for url in browser.request_urls() if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
    assert any(url.startswith(f"{site.base}/dashboard/events") for url in urls)
    assert [url for url in urls if not url.startswith(site.base + "/")] == []
