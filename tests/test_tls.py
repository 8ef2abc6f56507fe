"""Redis over TLS as Heroku Key-Value Store serves it: a real redis-server with ``--tls-port``, a
certificate made by the test, a password, and ``REDIS_URL=rediss://:<password>@host:port`` exactly as
the platform sets it. Relaxed (what app.json declares), strict (the default) and CA-file cases, through
the release step and through the real web and worker processes."""

from __future__ import annotations

import concurrent.futures
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from callstate import keys
from callstate.connection import NAME_PREFIX, tls_options
from callstate.errors import ConfigError
from callstate.settings import Settings
from tests import storedcall
from tests.procs import ROOT, Process, callstate, environment, procfile, start_web, start_worker, wait_until
from tests.redisserver import RedisServer, free_port
from tests.tlscerts import ServerCert, ca_signed, self_signed
from tests.twiliosign import TOKEN, call_params, call_sid, form_request

PASSWORD = "kv-store-password"


def app_json_env() -> dict[str, str]:
    """The fixed values app.json declares (what a Heroku deploy from the button gets)."""
    declared = json.loads((ROOT / "app.json").read_text())["env"]
    return {name: spec["value"] for name, spec in declared.items() if "value" in spec}


def tls_server(factory: pytest.TempPathFactory, name: str, cert: Callable[[Path], ServerCert]) -> RedisServer:
    directory = factory.mktemp(name)
    server = RedisServer(directory, tls=cert(directory / "certs"), password=PASSWORD)
    server.start()
    return server


@pytest.fixture(scope="module")
def heroku_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """TLS only, self-signed certificate for another host name, a password."""
    server = tls_server(tmp_path_factory, "tls-self-signed", self_signed)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """TLS only, a certificate for 127.0.0.1 signed by a private CA, a password."""
    server = tls_server(tmp_path_factory, "tls-ca", ca_signed)
    yield server
    server.stop()


class TestOptions:
    def test_plain_redis_gets_no_tls_options(self) -> None:
        """``redis://`` is left alone, whatever the TLS settings say."""
        assert tls_options(Settings(redis_url="redis://h:6379/0", redis_tls_verify="none")) == {}

    def test_rediss_verifies_chain_and_host_by_default(self) -> None:
        """Nothing set: the certificate and the host name are checked."""
        options = tls_options(Settings(redis_url="rediss://h:6380/0"))
        assert options == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}

    def test_verify_takes_required_or_none_only(self) -> None:
        """A typo is refused at start-up rather than read as "off"."""
        with pytest.raises(ConfigError) as raised:
            Settings.from_environ({"REDIS_TLS_VERIFY": "false"})
        assert raised.value.variable == "REDIS_TLS_VERIFY"

    def test_ca_file_with_verification_off_is_refused(self, tmp_path: Path) -> None:
        """Both at once is a contradiction: the CA file would be silently ignored."""
        ca = tmp_path / "ca.pem"
        ca.write_text("x")
        with pytest.raises(ConfigError) as raised:
            Settings.from_environ({"REDIS_TLS_VERIFY": "none", "REDIS_TLS_CA_FILE": str(ca)})
        assert raised.value.variable == "REDIS_TLS_CA_FILE"


class TestReleaseStep:
    def test_self_signed_certificate_fails_by_default_with_one_line_naming_the_settings(
        self, heroku_like: RedisServer
    ) -> None:
        """Verification is on unless relaxed: the release step fails with one line (no traceback)
        that says what is wrong and names both settings that fix it."""
        result = callstate("check", REDIS_URL=heroku_like.url, TWILIO_AUTH_TOKEN=TOKEN)
        assert result.returncode == 3
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "self-signed certificate" in lines[0]
        assert "REDIS_TLS_VERIFY=none" in lines[0]
        assert "REDIS_TLS_CA_FILE" in lines[0]
        assert PASSWORD not in result.stderr

    def test_app_json_env_makes_the_release_step_pass(self, heroku_like: RedisServer) -> None:
        """With what app.json declares and the platform's REDIS_URL untouched, `callstate check`
        connects, authenticates and writes the schema version."""
        env = {**app_json_env(), "REDIS_URL": heroku_like.url, "TWILIO_AUTH_TOKEN": TOKEN}
        result = callstate("check", **env)
        assert result.returncode == 0, result.stderr
        assert heroku_like.client().get(keys.SCHEMA) == str(keys.SCHEMA_VERSION).encode()

    def test_ca_file_verifies_a_certificate_its_ca_signed(self, private_ca: RedisServer) -> None:
        """REDIS_TLS_CA_FILE trusts that CA: chain and host name (127.0.0.1) check out."""
        assert private_ca.tls is not None
        result = callstate(
            "check",
            REDIS_URL=private_ca.url,
            REDIS_TLS_CA_FILE=str(private_ca.tls.ca),
            TWILIO_AUTH_TOKEN=TOKEN,
        )
        assert result.returncode == 0, result.stderr

    def test_ca_file_rejects_a_certificate_it_did_not_sign(
        self, heroku_like: RedisServer, private_ca: RedisServer
    ) -> None:
        """A CA file is not a blanket pass: another certificate still fails, in one line."""
        assert private_ca.tls is not None
        result = callstate(
            "check",
            REDIS_URL=heroku_like.url,
            REDIS_TLS_CA_FILE=str(private_ca.tls.ca),
            TWILIO_AUTH_TOKEN=TOKEN,
        )
        assert result.returncode == 3
        assert len(result.stderr.strip().splitlines()) == 1
        assert "REDIS_TLS_CA_FILE" in result.stderr

    def test_missing_ca_file_is_a_configuration_error(self, tmp_path: Path) -> None:
        """A CA file that is not there stops the command at start-up, naming the variable."""
        result = callstate(
            "check",
            REDIS_URL="rediss://127.0.0.1:1/0",
            REDIS_TLS_CA_FILE=str(tmp_path / "nope.pem"),
            TWILIO_AUTH_TOKEN=TOKEN,
        )
        assert result.returncode == 2
        assert "REDIS_TLS_CA_FILE" in result.stderr


def test_callback_goes_through_web_and_worker_over_tls(heroku_like: RedisServer, tmp_path: Path) -> None:
    """The real web and worker processes with app.json's env on the TLS Redis: a signed callback
    is acknowledged, reconciled and stored."""
    client = heroku_like.client()
    client.flushall()
    port = free_port()
    env = environment(**app_json_env(), REDIS_URL=heroku_like.url, TWILIO_AUTH_TOKEN=TOKEN, PORT=str(port))
    # app.json trusts every proxy (Heroku's router); the test talks to the process directly.
    env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"
    web = start_web(env, tmp_path, port)
    worker = start_worker(env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        sid = call_sid(0x715)
        body, headers = form_request(base + "/twilio/call-status", call_params(sid, "completed", 3))
        answer = httpx.post(base + "/twilio/call-status", content=body, headers=headers)
        assert answer.status_code == 204, answer.text
        wait_until(lambda: client.hget(keys.call(sid), "state") is not None, what="the state")
        state = storedcall.state(client, sid)
        assert state["status"] == "completed"
    finally:
        assert worker.stop() == 0, worker.output()
        web.stop()


def connections_by_name(client: redis.Redis) -> Counter[str]:
    """Open connections by client name, the test's own left out."""
    listed = client.client_list()
    return Counter(str(entry.get("name") or "(unnamed)") for entry in listed if entry.get("name") != "test")


def test_connection_budget_of_each_process(heroku_like: RedisServer, tmp_path: Path) -> None:
    """What each process holds open, counted with CLIENT LIST while it works (README,
    "Connection budget"): the web process under concurrent callbacks and reads, the worker with
    its RQ scheduler and sweep thread, and a `callstate` command."""
    client = heroku_like.client()
    client.flushall()
    port = free_port()
    env = environment(
        **app_json_env(),
        REDIS_URL=heroku_like.url,
        TWILIO_AUTH_TOKEN=TOKEN,
        PORT=str(port),
        SECRET_KEY="b" * 32,
    )
    env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"
    assert connections_by_name(client) == Counter()
    web = start_web(env, tmp_path, port)
    worker: Process | None = None
    try:
        base = f"http://127.0.0.1:{port}"
        token = callstate("token", **env).stdout.strip()
        auth = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, limits=httpx.Limits(max_connections=64)) as http:

            def post(n: int) -> int:
                sid = call_sid(0xB0D + n)
                body, headers = form_request(base + "/twilio/call-status", call_params(sid, "ringing", 1))
                return http.post("/twilio/call-status", content=body, headers=headers).status_code

            def read(n: int) -> int:
                return http.get(f"/calls/{call_sid(0xB0D + n)}", headers=auth).status_code

            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                codes = list(pool.map(post, range(200))) + list(pool.map(read, range(200)))
                codes += [http.get("/readyz").status_code]
        assert set(codes) <= {204, 200, 404}
        web_connections = connections_by_name(client)
        worker = start_worker(env, tmp_path)
        wait_until(lambda: client.llen("rq:queue:callstate") == 0, what="the queue to drain")
        # The sweep thread connects on its first tick, at start-up; the scheduler soon after.
        wait_until(
            lambda: f"{NAME_PREFIX}sweep" in connections_by_name(client),
            what="the sweep thread's connection",
        )
        everything = connections_by_name(client)
        worker_connections = everything - web_connections
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
    # The CLI alone: with the worker running, its processes (RQ's scheduler) may connect in the
    # same window, and a fast drain makes that likely.
    before = int(client.info("stats")["total_connections_received"])
    assert callstate("replay", "--all", **env).returncode == 0
    cli = int(client.info("stats")["total_connections_received"]) - before
    print(f"web {dict(web_connections)}; worker {dict(worker_connections)}; cli {cli}")  # noqa: T201
    assert sum(web_connections.values()) <= 4
    assert sum(worker_connections.values()) <= 5
    assert cli == 1


def test_a_worker_that_cannot_verify_says_which_setting_in_one_line(
    heroku_like: RedisServer, tmp_path: Path
) -> None:
    """Without app.json's env the worker does not crash-loop with a traceback: it logs one
    redis_unavailable line naming the settings, and keeps retrying."""
    env = environment(REDIS_URL=heroku_like.url)
    worker = Process("worker", procfile()["worker"], env, tmp_path)
    try:
        wait_until(lambda: "redis_unavailable" in worker.output(), what="the worker's complaint")
        [line] = [line for line in worker.output().splitlines() if "redis_unavailable" in line]
        assert "REDIS_TLS_VERIFY=none" in line
        assert "self-signed certificate" in line
        assert worker.alive()
    finally:
        worker.stop()
