"""Log lines: one per event, whatever a client puts in the fields."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx
from hypothesis import given
from hypothesis import strategies as st

from callstate.logs import console_value, render_console
from tests.procs import environment, start_web, wait_until
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import TOKEN

#: What a forged line would say: a callback that was never accepted, accepted.
FORGED = "12:00:00 info  callstate.web request method=POST path=/twilio/call-status status=204 FORGED"


class TestConsoleLines:
    @given(st.dictionaries(st.sampled_from(["path", "error", "kind"]), st.text()), st.text())
    def test_any_field_values_make_one_line(self, fields: dict[str, str], event: str) -> None:
        """No value, whatever characters it holds, splits a console line."""
        assert len(render_console(0.0, "info", "callstate.web", event, fields).splitlines()) == 1

    @given(st.text())
    def test_a_quoted_value_reads_back_as_it_was(self, text: str) -> None:
        """An escaped value is a JSON string of the original text; a plain one is the text."""
        written = console_value(text)
        assert (json.loads(written) if written.startswith('"') else written) == text

    def test_plain_values_are_written_as_they_are(self) -> None:
        """Paths, numbers and SIDs stay as readable as before."""
        assert console_value("/twilio/call-status") == "/twilio/call-status"
        assert console_value(204) == "204"


def test_a_path_with_a_line_break_cannot_forge_a_line(redis_server: RedisServer, tmp_path: Path) -> None:
    """Over HTTP, with console logs: a request whose path carries %0A and a made-up log line
    leaves one line, in which the made-up one is an escaped value."""
    port = free_port()
    env = environment(
        PORT=str(port), REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN=TOKEN, LOG_FORMAT="console"
    )
    web = start_web(env, tmp_path, port)
    try:
        path = "/nothing%0A" + FORGED.replace(" ", "%20")
        assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30).status_code == 404
        wait_until(lambda: "FORGED" in web.output(), what="the request's log line")
    finally:
        web.stop()
    lines = [line for line in web.output().splitlines() if "FORGED" in line]
    assert len(lines) == 1
    assert not lines[0].startswith("12:00:00")
    assert 'path="/nothing\\n12:00:00 info' in lines[0]
