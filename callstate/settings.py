"""Settings: every environment variable callstate reads, read once into a frozen object.

Nothing else in callstate looks at ``os.environ``. Each setting is declared once, as a field of
:class:`Settings` made by :func:`setting`: its variable name, its default and the parser that checks
it sit on one line, as in Starlette's ``Config``, and :meth:`Settings.from_environ` derives the rest
from those declarations. A missing or malformed variable is a :class:`~callstate.errors.ConfigError`
naming it, raised at start-up, never later. Secrets are kept out of ``repr`` so that a settings
object can be logged without leaking them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from callstate.errors import ConfigError
from callstate.event import ACCOUNT_SID
from callstate.tokens import MIN_SECRET_KEY

#: Twilio keeps phone numbers 120 days at most; so do we (docs/twilio.md, "Retention of phone numbers").
MAX_RETENTION_DAYS: Final = 120

#: A parser turns the stripped, non-empty text of a variable into the field's value, or raises
#: :class:`ValueError` with a message that completes "VARIABLE: ..." and never echoes a secret.
Parser = Callable[[str], Any]

_QUEUE_NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_KEY_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def setting(env: str, default: Any, parse: Parser = str, *, secret: bool = False) -> Any:
    """Declare a field of :class:`Settings` read from the variable ``env``.

    ``default`` applies when the variable is unset or blank (a mapping default is copied per
    instance); ``parse`` checks and converts the variable's text; a ``secret`` field never appears
    in ``repr``.
    """
    metadata = {"env": env, "parse": parse}
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return dataclasses.field(default_factory=lambda: frozen, repr=not secret, metadata=metadata)
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


def integer(low: int, high: int) -> Parser:
    """A parser for a whole number between ``low`` and ``high`` inclusive."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def choice(*allowed: str) -> Parser:
    """A parser for one of the ``allowed`` words."""

    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be {', '.join(allowed[:-1])} or {allowed[-1]}")
        return raw

    return parse


def redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def readable_file(raw: str) -> str:
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ValueError(f"{raw} is not a readable file")
    return raw


def store_redis_url(raw: str) -> str:
    """Any Redis URL; whether it names a cluster node is found out when connecting."""
    return redis_url(raw)


def public_base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, a fragment or credentials")
    return raw.rstrip("/")


def queue_name(raw: str) -> str:
    if not _QUEUE_NAME.fullmatch(raw):
        raise ValueError("may hold only letters, digits and _.:-")
    return raw


def account_sid(raw: str) -> str:
    if not ACCOUNT_SID.fullmatch(raw):
        raise ValueError("must be AC followed by 32 hex digits")
    return raw


def secret_pairs(name: re.Pattern[str], form: str) -> Parser:
    """A parser for ``<name>:<secret>,...``: each name matching ``name`` once, each secret non-empty.
    Errors say which entry is wrong and the expected ``form``, never a secret."""

    def parse(raw: str) -> Mapping[str, str]:
        pairs: dict[str, str] = {}
        for position, item in enumerate(raw.split(","), start=1):
            key, sep, secret = item.strip().partition(":")
            if not sep or not name.fullmatch(key) or not secret.strip():
                raise ValueError(f"entry {position} is not of the form {form}")
            if key in pairs:
                raise ValueError(f"entry {position} repeats {key}")
            pairs[key] = secret.strip()
        return MappingProxyType(pairs)

    return parse


def forwarded_allow_ips(raw: str) -> str:
    """Validate the trusted proxy list early, so a typo is a start-up error and not a 403 later."""
    for entry in raw.split(","):
        item = entry.strip()
        if item and item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
    return raw


def base_url(raw: str) -> str:
    return raw.rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    """The configuration of every callstate process. Build it with :meth:`from_environ`.

    Tests construct it directly with keyword arguments; every field has a safe default except the
    auth token, which only the web process requires (see :meth:`require_web`).
    """

    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", redis_url)
    #: For ``rediss://``: ``required`` checks chain and host name, ``none`` accepts any certificate
    #: (Heroku Key-Value Store's are self-signed; app.json sets it). See callstate.connection.
    redis_tls_verify: str = setting("REDIS_TLS_VERIFY", "required", choice("required", "none"))
    #: A PEM file of CA certificates trusted for ``rediss://`` instead of the system's.
    redis_tls_ca_file: str | None = setting("REDIS_TLS_CA_FILE", None, readable_file)
    #: Where the store lives, if not on REDIS_URL: a plain Redis or any node of a Redis Cluster
    #: (detected when connecting, see callstate.connection). The RQ queue stays on REDIS_URL.
    store_redis_url: str | None = setting("STORE_REDIS_URL", None, store_redis_url)
    port: int = setting("PORT", 8000, integer(1, 65535))
    #: uvicorn processes in one web process (Heroku sets it by dyno size).
    web_concurrency: int = setting("WEB_CONCURRENCY", 1, integer(1, 64))
    auth_token: str = setting("TWILIO_AUTH_TOKEN", "", secret=True)
    previous_auth_token: str = setting("TWILIO_AUTH_TOKEN_PREVIOUS", "", secret=True)
    subaccount_tokens: Mapping[str, str] = setting(
        "TWILIO_SUBACCOUNT_TOKENS",
        {},
        secret_pairs(ACCOUNT_SID, "AC<32 hex digits>:<auth token>"),
        secret=True,
    )
    #: Webhook SharedKeys by key id (several during a rotation); see receiver.signature.
    shared_keys: Mapping[str, str] = setting(
        "TWILIO_SHARED_KEYS", {}, secret_pairs(_KEY_ID, "<key id>:<secret>"), secret=True
    )
    public_base_url: str | None = setting("PUBLIC_BASE_URL", None, public_base_url)
    #: Peers whose X-Forwarded-Proto/-Host are believed (uvicorn's variable and syntax).
    forwarded_allow_ips: str = setting("FORWARDED_ALLOW_IPS", "127.0.0.1", forwarded_allow_ips)
    #: At least 32 characters (tokens.MIN_SECRET_KEY); unset, the read API is off.
    secret_key: str = setting("SECRET_KEY", "", secret=True)
    #: The bearer token GET /metrics asks for; unset, /metrics is 404.
    metrics_token: str = setting("METRICS_TOKEN", "", secret=True)
    queue_name: str = setting("CALLSTATE_QUEUE", "callstate", queue_name)
    retention_days: int = setting("CALLSTATE_RETENTION_DAYS", 30, integer(1, MAX_RETENTION_DAYS))
    max_body_bytes: int = setting("CALLSTATE_MAX_BODY_BYTES", 64 * 1024, integer(1024, 1024 * 1024))
    #: Distinct events kept per call; a new one beyond is refused with a log line (workers.store).
    max_events_per_call: int = setting("CALLSTATE_MAX_EVENTS_PER_CALL", 200, integer(20, 100_000))
    #: Group commit: the most events one RQ job carries.
    batch_max: int = setting("CALLSTATE_BATCH_MAX", 256, integer(1, 10_000))
    #: Group commit: at least this many milliseconds between two jobs of one web process. At low
    #: load nothing waits; under load each job carries what arrived meanwhile, which keeps the
    #: workers' per-job cost (RQ's bookkeeping, bench/RESULTS.md, "Where the time goes now") from
    #: falling behind.
    commit_interval_ms: int = setting("CALLSTATE_COMMIT_INTERVAL_MS", 2, integer(0, 1000))
    #: The same while jobs wait in the queue (the workers are behind): up to this long, or until
    #: a few callbacks are in hand (see receiver.groupcommit).
    commit_behind_ms: int = setting("CALLSTATE_COMMIT_BEHIND_MS", 25, integer(0, 1000))
    #: Seconds a job may run before RQ stops it; a dead worker's job is retried this long plus
    #: a few seconds after it started (see workers.runner).
    job_timeout: int = setting("CALLSTATE_JOB_TIMEOUT", 20, integer(2, 3600))
    #: Non-final calls older than this (seconds since their last event) are asked about over REST.
    stuck_after: int = setting("CALLSTATE_STUCK_AFTER", 30 * 60, integer(60, 30 * 86_400))
    #: Seconds between two sweeps (all workers together).
    sweep_interval: int = setting("CALLSTATE_SWEEP_INTERVAL", 60, integer(10, 3600))
    #: At most this many REST look-ups per sweep (Twilio rate-limits the REST API).
    sweep_limit: int = setting("CALLSTATE_SWEEP_LIMIT", 50, integer(0, 10_000))
    account_sid: str = setting("TWILIO_ACCOUNT_SID", "", account_sid)
    api_key_sid: str = setting("TWILIO_API_KEY_SID", "")
    api_key_secret: str = setting("TWILIO_API_KEY_SECRET", "", secret=True)
    twilio_api_base: str = setting("TWILIO_API_BASE", "https://api.twilio.com", base_url)
    log_format: str = setting("LOG_FORMAT", "auto", choice("auto", "json", "console"))
    #: Seconds in which a request must arrive whole, from when its connection is ready for it
    #: (opened, or the previous response sent); a callback is under 2 KiB (see receiver.protocol).
    request_timeout: int = setting("CALLSTATE_REQUEST_TIMEOUT", 10, integer(1, 300))
    #: Connections one web process serves at once; requests on more get 503 (see receiver.protocol).
    max_connections: int = setting("CALLSTATE_MAX_CONNECTIONS", 1000, integer(1, 100_000))

    # Not read from the environment: fixed by the design, overridable by tests.
    #: Seconds a Redis command may take before the request is answered 503.
    redis_timeout: float = 2.0
    #: Seconds a client should wait before retrying after a 503.
    retry_after: int = 5

    def __post_init__(self) -> None:
        if self.secret_key and len(self.secret_key) < MIN_SECRET_KEY:
            # Never echoes the key; says how to make a good one.
            raise ConfigError(
                "SECRET_KEY",
                f"must be at least {MIN_SECRET_KEY} characters; make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        if self.redis_tls_ca_file is not None and self.redis_tls_verify == "none":
            raise ConfigError("REDIS_TLS_CA_FILE", "is set but REDIS_TLS_VERIFY=none checks nothing")

    @property
    def store_url(self) -> str:
        """The store's Redis: ``STORE_REDIS_URL``, else ``REDIS_URL``."""
        return self.store_redis_url or self.redis_url

    @property
    def retention_seconds(self) -> int:
        return self.retention_days * 86_400

    def require_web(self) -> Settings:
        """Check what only the web process needs; raise :class:`ConfigError` if it is missing.

        Signature validation cannot be switched off: there is no setting for it, and without a
        token the web process refuses to start.
        """
        if not self.auth_token:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN", "is not set; the web process cannot verify Twilio's signatures"
            )
        return self

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read the settings from ``environ`` (``os.environ`` in production, a dict in tests).

        A variable that is unset or blank takes its field's default.
        """
        values: dict[str, Any] = {}
        for declared in dataclasses.fields(cls):
            name = declared.metadata.get("env")
            raw = (environ.get(name) or "").strip() if name else ""
            if not name or not raw:
                continue
            try:
                values[declared.name] = declared.metadata["parse"](raw)
            except ValueError as error:
                raise ConfigError(name, str(error)) from None
        return cls(**values)

    @classmethod
    def variables(cls) -> dict[str, Any]:
        """Every environment variable callstate reads, with its default (for docs and checks)."""
        defaults = cls()
        return {
            f.metadata["env"]: getattr(defaults, f.name)
            for f in dataclasses.fields(cls)
            if "env" in f.metadata
        }
