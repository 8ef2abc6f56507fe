"""The operator's commands as a new user runs them: `callstate` subprocesses against a real Redis.

token, sweep, replay, requeue-failed and inspect; ./.env read by every command (environment wins);
deploy/callstate.env.example usable as that .env.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import orjson
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry

from callstate import keys
from callstate.event import Event
from callstate.jobqueue import OrjsonSerializer, make_queue
from callstate.progress import Progress
from tests import storedcall
from tests.procs import ROOT, callstate
from tests.redisserver import RedisServer
from tests.twiliosign import call_params, call_sid
from workers import codec
from workers.reduce import reduce
from workers.store import Store

RETENTION = 86_400


def event(sid: str, status: str, seq: int, received_at: float | None = None, **extra: str) -> Event:
    return Event.create("call", call_params(sid, status, seq, **extra), received_at=received_at)


def snapshot(client: redis.Redis) -> dict[object, object]:
    """Every key with its serialized value: what "changes nothing" compares."""
    return {key: client.dump(key) for key in client.keys("*")}


class TestToken:
    def test_zero_ttl_is_one_line_not_a_traceback(self) -> None:
        result = callstate("token", "--ttl", "0", SECRET_KEY="s")
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "--ttl" in result.stderr
        assert "must be positive" in result.stderr


class TestSweep:
    def test_without_credentials_says_nothing_was_asked(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """Only zeros before; now it says why: no REST credentials, Twilio was asked nothing."""
        result = callstate("sweep", REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        assert "no Twilio REST credentials" in result.stdout
        assert "asked about nothing" in result.stdout


class TestReplay:
    def test_unknown_call_is_not_created(self, redis_server: RedisServer, redis_client: redis.Redis) -> None:
        """`replay CA<unknown>` used to store a phantom active call; now it says so, changes nothing."""
        Store(redis_client, RETENTION).write_schema_version()
        before = snapshot(redis_client)
        sid = call_sid(0xDEAD)
        result = callstate("replay", sid, REDIS_URL=redis_server.url)
        assert result.returncode == 1
        assert f"unknown call {sid} (no stored events): nothing changed" in result.stderr
        assert snapshot(redis_client) == before

    def test_malformed_sid_changes_nothing(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """`replay nope` used to write a malformed SID that broke every later sweep."""
        Store(redis_client, RETENTION).write_schema_version()
        before = snapshot(redis_client)
        result = callstate("replay", "nope", REDIS_URL=redis_server.url)
        assert result.returncode == 2
        assert result.stderr.strip() == "callstate replay: not a CallSid: nope; nothing changed"
        assert snapshot(redis_client) == before

    def test_known_calls_are_replayed_beside_unknown_ones(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        known = call_sid(1)
        Store(redis_client, RETENTION).apply([event(known, "completed", 3)])
        result = callstate("replay", known, call_sid(2), REDIS_URL=redis_server.url)
        assert result.returncode == 1
        assert "replayed 1 call(s), 0 changed" in result.stdout
        assert redis_client.exists(keys.call(call_sid(2))) == 0

    def test_a_tenants_record_is_replayed_by_its_name(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """`replay CA…:AC…` recomputes a tenant's record (docs/redis-schema.md, "Tenants")."""
        tenant = "AC" + "7e" * 16
        sid = call_sid(3)
        Store(redis_client, RETENTION).apply(
            [Event.create("call", event(sid, "ringing", 1).params, tenant=tenant)]
        )
        result = callstate("replay", keys.record(sid, tenant), REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        assert "replayed 1 call(s), 0 changed" in result.stdout

    def test_replay_all_shows_progress(self, redis_server: RedisServer, redis_client: redis.Redis) -> None:
        """A long replay writes a progress line every thousand calls (stderr is not a terminal here)."""
        Store(redis_client, RETENTION).apply([event(call_sid(n), "ringing", 1) for n in range(1050)])
        result = callstate("replay", "--all", REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        assert "replay: 1,000" in result.stderr
        assert result.stdout.strip() == "replayed 1050 call(s), 0 changed"


class TestMigrate:
    def test_a_schema_2_store_reads_and_updates_as_schema_3(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """Records written as schema 2 documented them (events and deliveries in their own
        hashes, the state as JSON) become schema 3 call hashes: same state and events, the counts
        and first times kept, the TTL kept, the old keys gone; running it again changes nothing,
        and the store then takes a redelivery like any other."""
        sids = [call_sid(n) for n in range(900, 905)]
        histories = {
            sid: [event(sid, s, n, 1_790_000_000.5 + n) for n, s in enumerate(STATUSES)] for sid in sids
        }
        for sid, history in histories.items():
            storedcall.write_schema_2(redis_client, sid, history, RETENTION)
        redis_client.set(keys.SCHEMA, 2)

        result = callstate("migrate", REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        assert "migrated 5 call record(s); the store is at schema 3" in result.stdout
        assert redis_client.get(keys.SCHEMA) == b"3"
        assert redis_client.keys("callstate:events:*") == []
        assert redis_client.keys("callstate:deliveries:*") == []
        for sid, history in histories.items():
            assert storedcall.state_json(redis_client, sid) == reduce(sid, history).to_json()
            stored = storedcall.entries(redis_client, sid)
            assert {slot: e.value for slot, e in stored.items()} == {
                codec.field(e): codec.encode(e) for e in history
            }
            counts = {slot: e.deliveries for slot, e in stored.items()}
            assert counts == {codec.field(e): 2 if e is history[0] else 1 for e in history}
            assert sorted(e.first_ms for e in stored.values() if e.first_ms) == [
                1_790_000_000_500,
                1_790_000_001_500,
                1_790_000_002_500,
            ]
            assert 0 < redis_client.ttl(keys.call(sid)) <= RETENTION

        before = snapshot(redis_client)
        again = callstate("migrate", REDIS_URL=redis_server.url)
        assert again.returncode == 0, again.stderr
        assert "migrated 0 call record(s)" in again.stdout
        assert snapshot(redis_client) == before

        first = sids[0]
        Store(redis_client, RETENTION).apply([histories[first][1]])
        counts = {slot: e.deliveries for slot, e in storedcall.entries(redis_client, first).items()}
        assert counts[codec.field(histories[first][1])] == 2


STATUSES = ("initiated", "ringing", "completed")


class TestRequeueFailed:
    def test_requeues_and_counts(self, redis_server: RedisServer, redis_client: redis.Redis) -> None:
        queue = make_queue(redis_client, "callstate")
        registry = FailedJobRegistry(queue=queue)
        for n in range(3):
            job = Job.create("workers.jobs.apply_events", args=([],), connection=redis_client,
                             serializer=OrjsonSerializer, id=f"failed-{n}", origin="callstate")  # fmt: skip
            job.save()
            registry.add(job, ttl=600)
        result = callstate("requeue-failed", REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "requeued 3 failed job(s) onto callstate"
        assert sorted(queue.job_ids) == ["failed-0", "failed-1", "failed-2"]


class TestProgress:
    def test_a_line_every_n_items_off_a_terminal(self) -> None:
        stream = io.StringIO()
        progress = Progress("replay", stream, total=5, every=2)
        for _ in range(5):
            progress.advance(1)
        progress.finish()
        assert stream.getvalue().splitlines() == ["replay: 2/5", "replay: 4/5"]


class TestInspect:
    def test_timeline_with_deliveries_and_state(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """Each distinct event once, in sequence order, with its Twilio time, source, first
        received time and how many deliveries; the state on top. --json has the same facts."""
        sid = call_sid(0x1A)
        store = Store(redis_client, RETENTION)
        first = 1_790_000_000.25
        store.apply(
            [event(sid, "completed", 2, first + 5, CallDuration="42"), event(sid, "ringing", 1, first)]
        )
        store.apply([event(sid, "ringing", 1, first + 9)])  # Twilio's retry of the same callback
        text = callstate("inspect", sid, REDIS_URL=redis_server.url)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0].startswith(f"call {sid}: completed, final, duration 42 s, 2 call event(s)")
        assert lines[2].split() == [
            "1",
            "ringing",
            "2026-09-01T12:00:01Z",
            "twilio",
            "2026-09-21T14:13:20.250Z",
            "2",
        ]
        assert lines[3].split() == [
            "2",
            "completed",
            "2026-09-01T12:00:02Z",
            "twilio",
            "2026-09-21T14:13:25.250Z",
            "1",
        ]

        data = orjson.loads(callstate("inspect", sid, "--json", REDIS_URL=redis_server.url).stdout)
        assert data["state"]["status"] == "completed"
        assert [(e["sequence_number"], e["status"], e["deliveries"]) for e in data["timeline"]] == [
            (1, "ringing", 2),
            (2, "completed", 1),
        ]
        assert data["timeline"][0]["received_at"] == "2026-09-21T14:13:20.250Z"

    def test_unknown_call_exits_1(self, redis_server: RedisServer, redis_client: redis.Redis) -> None:
        result = callstate("inspect", call_sid(0xBEEF), REDIS_URL=redis_server.url)
        assert result.returncode == 1
        assert result.stderr.strip() == f"callstate inspect: unknown call {call_sid(0xBEEF)}"

    def test_malformed_sid_exits_2(self) -> None:
        result = callstate("inspect", "CA123")
        assert result.returncode == 2
        assert "not a CallSid: CA123" in result.stderr


class TestDotenv:
    def test_commands_read_dotenv_and_the_environment_wins(
        self, redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """SECRET_KEY comes from ./.env; its REDIS_URL loses to the environment's."""
        (tmp_path / ".env").write_text(
            "SECRET_KEY=from-dotenv-0123456789abcdefghijklmnop\nREDIS_URL=redis://127.0.0.1:1/0\n"
        )
        assert callstate("token", cwd=tmp_path).returncode == 0
        sid = call_sid(3)
        Store(redis_client, RETENTION).apply([event(sid, "ringing", 1, time.time())])
        assert callstate("inspect", sid, cwd=tmp_path, REDIS_URL=redis_server.url).returncode == 0
        assert callstate("inspect", sid, cwd=tmp_path).returncode == 3  # .env's unreachable Redis

    def test_the_example_environment_file_works_as_dotenv(
        self, redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """deploy/callstate.env.example copied to .env: the release step passes (Redis from the
        environment, as `make run` sets it for the Redis it starts)."""
        shutil.copy(ROOT / "deploy" / "callstate.env.example", tmp_path / ".env")
        result = callstate("check", cwd=tmp_path, REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        assert callstate("token", cwd=tmp_path).returncode == 0
