"""A local stand-in for Twilio's REST API: answers the Call resource JSON (docs/twilio.md, "The REST
Call resource"), errors, timeouts; records what it was asked and with which credentials.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

ACCOUNT = "AC" + "a" * 32
SUBACCOUNT = "AC" + "b" * 32
TOKEN = "main-auth-token-1234"
KEY_SID = "SK" + "c" * 32
KEY_SECRET = "api-key-secret-5678"
SUB_TOKEN = "sub-auth-token-9999"
CALL = "CA" + "1" * 32
#: Short, so a hanging server costs the test a third of a second.
TIMEOUT = 0.3

_PATH = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls/(CA[0-9a-f]{32})\.json")


def call_resource(
    sid: str, status: str = "completed", account: str = ACCOUNT, **fields: Any
) -> dict[str, Any]:
    """A Call resource shaped like the documented sample, consistent with ``status``.

    ``end_time`` and ``duration`` are empty unless the call completed, and ``start_time`` is empty
    for a call that was never dialed (docs/twilio.md, "The REST Call resource").
    """
    dialed = status not in ("queued", "canceled")
    ended = status == "completed"
    resource: dict[str, Any] = {
        "account_sid": account,
        "annotation": None,
        "answered_by": None,
        "api_version": "2010-04-01",
        "caller_name": None,
        "date_created": "Tue, 01 Sep 2026 12:00:00 +0000",
        "date_updated": "Tue, 01 Sep 2026 12:00:44 +0000",
        "direction": "outbound-api",
        "duration": "15" if ended else None,
        "end_time": "Tue, 01 Sep 2026 12:00:44 +0000" if ended else None,
        "forwarded_from": None,
        "from": "+15017122661",
        "from_formatted": "(501) 712-2661",
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": "PN" + "0" * 32,
        "price": "-0.03000" if ended else None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": sid,
        "start_time": "Tue, 01 Sep 2026 12:00:29 +0000" if dialed else None,
        "status": status,
        "subresource_uris": {
            "notifications": f"/2010-04-01/Accounts/{account}/Calls/{sid}/Notifications.json",
            "recordings": f"/2010-04-01/Accounts/{account}/Calls/{sid}/Recordings.json",
            "events": f"/2010-04-01/Accounts/{account}/Calls/{sid}/Events.json",
        },
        "to": "+14155551212",
        "to_formatted": "(415) 555-1212",
        "trunk_sid": None,
        "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
    }
    resource.update(fields)
    return resource


@dataclass
class Answer:
    """What the fake answers for one CallSid; ``hang`` holds the request without answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Seen:
    """One request the fake received."""

    method: str
    path: str
    account_sid: str | None
    call_sid: str | None
    authorization: str | None


class FakeTwilio:
    """A threaded HTTP server on 127.0.0.1 (free port) playing Twilio's Call fetch endpoint.

    Unknown calls get Twilio's 404 error JSON. ``requests`` lists every request, in order.
    """

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[Seen] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                match = _PATH.fullmatch(self.path)
                account, sid = match.groups() if match else (None, None)
                fake.requests.append(Seen("GET", self.path, account, sid, self.headers.get("Authorization")))
                answer = fake.answers.get(sid or "") or Answer(
                    404,
                    orjson.dumps(
                        {
                            "code": 20404,
                            "message": f"The requested resource {self.path} was not found",
                            "more_info": "https://www.twilio.com/docs/errors/20404",
                            "status": 404,
                        }
                    ),
                )
                if answer.hang:
                    fake.release.wait(10)  # the test ends (and sets release) long before
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for the serving loop to notice (0.5 s by default).
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def call(self, sid: str, status: str = "completed", account: str = ACCOUNT, **fields: Any) -> None:
        """Answer 200 with the Call resource ``sid`` in ``status``."""
        self.answers[sid] = Answer(200, orjson.dumps(call_resource(sid, status, account, **fields)))

    def fail(self, sid: str, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` with ``body`` (by default an empty JSON object) and ``headers``."""
        self.answers[sid] = Answer(status, body, headers or {})

    def hang(self, sid: str) -> None:
        self.answers[sid] = Answer(hang=True)

    def asked(self) -> list[str | None]:
        """The CallSids asked about, in order."""
        return [seen.call_sid for seen in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
