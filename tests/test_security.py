"""The attacks of issue 10 replayed over HTTP against the Procfile's real processes, shown harmless.

One ``web`` and one ``worker`` process on a private redis-server serve the whole module (starting
them is most of the cost), configured with a subaccount's token and a small per-call event cap.
Each test uses calls of its own and waits for the worker to have applied every accepted callback
(its ``job`` log lines count them) before it looks at the store: outcomes with deadlines, never
durations.

* A captured callback re-split every way one or two boundaries can move (tests/resplits.py)
  changes nothing stored: state, version and event set stay byte-identical.
* A tenant's token cannot change the main account's call, and read tokens see what their accounts
  may see.
* A flood of distinct signed events on one call is capped, and a legitimate call sent behind it
  is still reconciled.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2 as httpx
import pytest
import redis

from callstate import keys, tokens
from callstate.counters import event_field
from callstate.event import Event
from callstate.paramnames import KNOWN
from callstate.traffic import make_history
from tests import storedcall
from tests.procs import Process, environment, start_web, start_worker, wait_until
from tests.redisserver import RedisServer, free_port
from tests.resplits import resplits
from tests.twiliosign import ACCOUNT, TOKEN, call_params, call_sid, form_request, signature
from workers.store import OVER_CAP

OVER_CAP_FIELD = event_field(OVER_CAP)

SECRET = "security-test-secret-key-0123456789"
TENANT = "AC" + "7e" * 16
TENANT_TOKEN = "tenant-auth-token-0123456789"
OTHER_TENANT = "AC" + "0b" * 16
CAP = 20
PATHS = {"call": "/twilio/call-status", "recording": "/twilio/recording-status"}


@dataclass
class Service:
    """The running processes and what a test needs to talk to them."""

    web: Process
    worker: Process
    base: str
    client: httpx.Client
    redis: redis.Redis
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, kind: str, params: Sequence[tuple[str, str]], token: str = TOKEN) -> httpx.Response:
        body, headers = form_request(self.base + PATHS[kind], list(params), token)
        return self.send(kind, body, headers)

    def send(self, kind: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        response = self.client.post(PATHS[kind], content=body, headers=headers)
        if response.status_code == 204:
            with self.lock:
                self.accepted += 1
        return response

    def applied(self) -> int:
        """Events the worker has applied so far, from its one log line per job."""
        total = 0
        for line in self.worker.output().splitlines():
            if '"event":"job"' in line:
                total += json.loads(line)["events"]
        return total

    def drain(self, timeout: float = 60) -> None:
        """Wait until the worker has applied every callback answered 204."""
        wait_until(lambda: self.applied() >= self.accepted, timeout=timeout, what="the worker to catch up")

    def read(self, sid: str, *accounts: str) -> httpx.Response:
        token = tokens.issue(SECRET, ttl=600, accounts=accounts)
        return self.client.get(f"/calls/{sid}", headers={"authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("security")
    server = RedisServer(directory / "redis")
    server.start()
    port = free_port()
    env = environment(
        PORT=str(port),
        REDIS_URL=server.url,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_SUBACCOUNT_TOKENS=f"{TENANT}:{TENANT_TOKEN}",
        SECRET_KEY=SECRET,
        CALLSTATE_MAX_EVENTS_PER_CALL=str(CAP),
    )
    web = start_web(env, directory, port)
    worker = start_worker(env, directory)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield Service(web, worker, base, client, server.client())
    finally:
        web.stop()
        worker.stop()
        server.stop()


def stored(client: redis.Redis, record: str) -> dict[str, Any]:
    """Everything stored about one call record, byte for byte."""
    return {
        **storedcall.content(client, record),
        "published": client.hget(keys.published(0), record),
    }


def realistic(seed: int, sid: str) -> list[Event]:
    """A realistic history (tests/histories.py) with a completed call and a recording; only what
    Twilio sends (no REST observation)."""
    rng = random.Random(seed)
    while True:
        history = [event for event in make_history(rng, sid) if event.source == "twilio"]
        kinds = {(event.kind, event.status) for event in history}
        # Without an unknown parameter: a re-split inside one (SomeFuturePar=amx) may take its
        # slot, with no effect on the state (tests/test_paramnames.py), but not byte for byte.
        unknown = any(name not in KNOWN for event in history for name, _ in event.params)
        if ("call", "completed") in kinds and any(kind == "recording" for kind, _ in kinds) and not unknown:
            return history


class TestResplits:
    def test_every_resplit_of_captured_callbacks_changes_nothing(self, service: Service) -> None:
        """All single- and double-boundary re-splits of a captured completed callback and of a
        captured recording callback, sent under the captured signature: each is 204 or 400, and
        afterwards the call's state, version and event set are byte-identical."""
        sid = call_sid(0x5E_0001)
        history = realistic(1, sid)
        for event in history:
            assert service.post(event.kind, event.params).status_code == 204
        service.drain()
        before = stored(service.redis, sid)
        assert before["state"], "the genuine history was not stored"

        captured = [
            next(e for e in history if e.kind == "call" and e.status == "completed"),
            next(e for e in reversed(history) if e.kind == "recording"),
        ]
        requests = []
        for event in captured:
            url = service.base + PATHS[event.kind]
            header = signature(url, list(event.params))
            for variant in resplits(event.params):
                body, headers = form_request(url, variant)
                headers["x-twilio-signature"] = header  # the captured one, not a new one
                requests.append((event.kind, body, headers))
        # Thousands of them (a long RecordingUrl splits many ways): sent concurrently, so that
        # the group commit batches them.
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = Counter(pool.map(lambda r: service.send(*r).status_code, requests))
        service.drain()

        assert len(requests) > 300  # the generator did its job: hundreds of variants with a valid signature
        assert set(answers) <= {204, 400}, answers  # never a 403 (valid signature), never a 500
        assert stored(service.redis, sid) == before


class TestTenants:
    def test_a_tenant_token_cannot_rewrite_a_main_account_call(self, service: Service) -> None:
        """The attack of issue 10 section 2: the tenant signs AccountSid=<tenant>&CallSid=<a main
        account call>&CallStatus=completed&SequenceNumber=999 with its own token. It is accepted
        (the signature is the tenant's), but the main account's call stays byte-identical; the
        forgery lives in the tenant's own record, which only the tenant's readers see."""
        sid = call_sid(0x5E_0002)
        assert service.post("call", call_params(sid, "ringing", 1)).status_code == 204
        service.drain()
        before = stored(service.redis, sid)

        forged = [
            ("AccountSid", TENANT),
            ("CallSid", sid),
            ("CallStatus", "completed"),
            ("SequenceNumber", "999"),
            ("From", "+15550000666"),
            ("To", "+15550000667"),
            ("Direction", "inbound"),
        ]
        assert service.post("call", forged, token=TENANT_TOKEN).status_code == 204
        # With the main token the same request is refused: a listed subaccount's token only.
        assert service.post("call", forged).status_code == 403
        service.drain()

        assert stored(service.redis, sid) == before
        main = service.read(sid).json()
        assert (main["status"], main["account_sid"], main["from"]) == ("ringing", ACCOUNT, "+15005550001")
        tenant = service.read(sid, TENANT).json()
        assert (tenant["status"], tenant["account_sid"]) == ("completed", TENANT)
        assert service.read(sid, ACCOUNT).json() == main
        assert service.read(sid, OTHER_TENANT).status_code == 404

    def test_a_tenant_listing_shows_its_own_calls_only(self, service: Service) -> None:
        """GET /calls with a token scoped to the tenant lists the tenant's records, not the main
        account's; an unscoped token lists both."""
        ours, theirs = call_sid(0x5E_0003), call_sid(0x5E_0004)
        assert service.post("call", call_params(ours, "ringing", 1)).status_code == 204
        tenant_call = [
            (name, TENANT if name == "AccountSid" else value)
            for name, value in call_params(theirs, "ringing", 1)
        ]
        assert service.post("call", tenant_call, token=TENANT_TOKEN).status_code == 204
        service.drain()

        def listed(*accounts: str) -> set[tuple[str, str]]:
            token = tokens.issue(SECRET, ttl=600, accounts=accounts)
            answer = service.client.get("/calls?limit=1000", headers={"authorization": f"Bearer {token}"})
            return {(c["sid"], c["account_sid"]) for c in answer.json()["calls"]}

        assert (theirs, TENANT) in listed(TENANT)
        assert (ours, ACCOUNT) not in listed(TENANT)
        assert {(ours, ACCOUNT), (theirs, TENANT)} <= listed()


class TestFlood:
    def test_a_flood_on_one_call_is_capped_and_other_calls_are_still_reconciled(
        self, service: Service
    ) -> None:
        """Many distinct signed events on one call (each a new SequenceNumber): the call keeps at
        most the cap, the rest are refused and counted, and a legitimate call sent behind the
        flood is reconciled within the deadline."""
        flooded, legit = call_sid(0x5E_0005), call_sid(0x5E_0006)
        floods = 600
        counted_before = int(cast(bytes | None, service.redis.hget(keys.METRICS, OVER_CAP_FIELD)) or 0)

        def flood(n: int) -> int:
            params = call_params(flooded, "in-progress", n % 60, Junk=str(n))
            return service.post("call", params).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(flood, range(floods)))
        assert set(answers) == {204}
        for number, status in enumerate(("initiated", "ringing", "in-progress", "completed")):
            extra = {"CallDuration": "42", "SipResponseCode": "200"} if status == "completed" else {}
            assert service.post("call", call_params(legit, status, number, **extra)).status_code == 204

        def reconciled() -> bool:
            answer = service.read(legit)
            return answer.status_code == 200 and answer.json()["status"] == "completed"

        wait_until(reconciled, timeout=15, what="the legitimate call behind the flood")
        service.drain()
        assert len(storedcall.events(service.redis, flooded)) == CAP
        counted = int(cast(bytes, service.redis.hget(keys.METRICS, OVER_CAP_FIELD))) - counted_before
        assert counted == floods - CAP
        assert '"event":"events_over_cap"' in service.worker.output()
