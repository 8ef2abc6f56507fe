"""A real browser for end-to-end tests: Debian's chromium, driven by Selenium through Debian's
chromedriver (both installed by scripts/ensure-browser; nothing is downloaded at run time).

:class:`Browser` keeps every console message and every network request the page made, so that
tests can say "no console errors" and "no request left the origin" about a whole session.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds a test waits for the page to show something: a deadline, not a duration asserted, long
#: enough for a loaded CI machine (the page normally shows a change within a second).
DEADLINE = 30.0

T = TypeVar("T")


class Browser:
    """One headless Chromium with a fresh profile under ``profile``."""

    def __init__(self, profile: Path) -> None:
        for program in (CHROMIUM, CHROMEDRIVER):
            if shutil.which(program) is None:
                raise RuntimeError(
                    f"{program} is missing: run the tests with `make test` (scripts/ensure-browser)"
                )
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # we run as root in CI
            "--disable-gpu",
            # Nothing may phone home: this machine has no network, and the test checks that
            # every request the page makes stays on its origin.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1280,1000",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.console: list[dict[str, Any]] = []
        self.network: list[dict[str, Any]] = []

    def collect(self) -> None:
        """Move the browser's new console messages and network events into ours."""
        # get_log is Chromium's logging extension, untyped in Selenium.
        driver: Any = self.driver
        self.console += driver.get_log("browser")
        for entry in driver.get_log("performance"):
            message = orjson.loads(entry["message"])["message"]
            if message["method"].startswith("Network.requestWillBeSent"):
                self.network.append(message)

    def errors(self) -> list[dict[str, Any]]:
        """Console messages of level SEVERE so far."""
        self.collect()
        return [entry for entry in self.console if entry["level"] == "SEVERE"]

    def request_urls(self) -> list[str]:
        """Every URL the page requested so far."""
        self.collect()
        return [m["params"]["request"]["url"] for m in self.network if "request" in m["params"]]

    def requests(self, url_part: str) -> list[tuple[str, dict[str, str]]]:
        """(URL, headers as sent on the wire) of each request whose URL contains ``url_part``;
        Chromium reports the headers in an event of their own."""
        self.collect()
        urls = {
            m["params"]["requestId"]: m["params"]["request"]["url"]
            for m in self.network
            if "request" in m["params"]
        }
        return [
            (urls[m["params"]["requestId"]], {k.lower(): v for k, v in m["params"]["headers"].items()})
            for m in self.network
            if m["method"] == "Network.requestWillBeSentExtraInfo"
            and url_part in urls.get(m["params"]["requestId"], "")
        ]

    def wait(self, condition: Callable[[webdriver.Chrome], T], what: str, timeout: float = DEADLINE) -> T:
        """Poll ``condition`` until it returns something true; fail naming ``what``."""
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition, what)

    def script(self, source: str, *args: object) -> Any:
        return self.driver.execute_script(source, *args)

    def quit(self) -> None:
        self.driver.quit()
