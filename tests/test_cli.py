"""The `callstate` command as an operator runs it: real subprocesses, real Redis."""

from __future__ import annotations

from callstate import keys, tokens
from tests.procs import callstate
from tests.redisserver import RedisServer

run = callstate


def test_missing_token_is_a_one_line_error_naming_it() -> None:
    """No traceback: the variable, and exit status 2."""
    result = run("check")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "callstate: configuration error: TWILIO_AUTH_TOKEN: is not set; "
        "the web process cannot verify Twilio's signatures"
    ]


def test_bad_value_names_the_variable() -> None:
    """A malformed variable stops the process with its name."""
    result = run("worker", PORT="eighty")
    assert result.returncode == 2
    assert "PORT" in result.stderr


def test_release_check_writes_the_schema_version(redis_server: RedisServer, redis_client: object) -> None:
    """The release step checks Redis and records the schema version."""
    result = run("check", REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN="t")
    assert result.returncode == 0, result.stderr
    assert redis_server.client().get(keys.SCHEMA) == str(keys.SCHEMA_VERSION).encode()


def test_redis_down_is_reported_not_a_traceback() -> None:
    """An unreachable Redis is one line and exit status 3."""
    result = run("check", REDIS_URL="redis://127.0.0.1:1/0", TWILIO_AUTH_TOKEN="t")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "Redis unavailable" in result.stderr


def test_token_lifetime_is_at_most_30_days() -> None:
    """`callstate token --ttl` over 30 days is a usage error saying the limit, not a token."""
    result = run("token", "--ttl", str(31 * 86_400), SECRET_KEY="k" * 32)
    assert result.returncode == 2
    assert "30 days" in result.stderr
    assert result.stdout == ""


def test_a_short_secret_key_is_a_configuration_error() -> None:
    """SECRET_KEY under 32 characters stops `callstate token` with one line naming it."""
    result = run("token", SECRET_KEY="k" * 31)
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr
    assert "32" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_needs_secret_key() -> None:
    """`callstate token` without SECRET_KEY names it."""
    result = run("token")
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr


def test_token_scoped_to_an_account_reads_only_that_account() -> None:
    """`callstate token --account AC…` prints a token whose scope is that account; a malformed
    account is one line and a non-zero exit, not a token that reads nothing."""
    tenant = "AC" + "7e" * 16
    result = run("token", "--account", tenant, SECRET_KEY="cli-secret-key-0123456789abcdefghij")
    assert result.returncode == 0, result.stderr
    assert tokens.check("cli-secret-key-0123456789abcdefghij", result.stdout.strip()) == frozenset([tenant])
    refused = run("token", "--account", "ACnope", SECRET_KEY="cli-secret-key-0123456789abcdefghij")
    assert refused.returncode != 0
    assert refused.stdout == ""
    assert "AccountSid" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_release_check_warns_about_http_behind_a_router(
    redis_server: RedisServer, redis_client: object
) -> None:
    """`callstate check` passes but says that http:// behind Heroku's router means 403s."""
    result = run(
        "check",
        REDIS_URL=redis_server.url,
        TWILIO_AUTH_TOKEN="t",
        PUBLIC_BASE_URL="http://app.example.com",
        DYNO="release.1",
    )
    assert result.returncode == 0, result.stderr
    assert "callstate: warning: PUBLIC_BASE_URL starts with http://" in result.stderr
    assert "configuration ok (1 warning(s) above)" in result.stdout
