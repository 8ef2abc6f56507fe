"""Settings: every environment variable callstate reads, read once into a frozen object.

Nothing else in callstate looks at ``os.environ``. A missing or malformed variable is a
:class:`~callstate.errors.ConfigError` naming it, raised at start-up, never later. Secrets are kept
out of ``repr`` so that a settings object can be logged without leaking them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from callstate.errors import ConfigError
from callstate.event import ACCOUNT_SID

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"

#: Twilio keeps phone numbers 120 days at most (reference section 6); so do we.
MAX_RETENTION_DAYS: Final = 120

_QUEUE_NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class Settings:
    """The configuration of every callstate process. Build it with :meth:`from_environ`.

    Tests construct it directly with keyword arguments; every field has a safe default except the
    auth token, which only the web process requires (see :meth:`require_web`).
    """

    redis_url: str = DEFAULT_REDIS_URL
    port: int = 8000
    auth_token: str = field(default="", repr=False)
    previous_auth_token: str = field(default="", repr=False)
    subaccount_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    public_base_url: str | None = None
    #: Peers whose X-Forwarded-Proto/-Host are believed (uvicorn's variable and syntax).
    forwarded_allow_ips: str = "127.0.0.1"
    secret_key: str = field(default="", repr=False)
    queue_name: str = "callstate"
    retention_days: int = 30
    max_body_bytes: int = 64 * 1024
    #: Group commit: the most events one RQ job carries.
    batch_max: int = 256
    #: Group commit: at least this many milliseconds between two jobs of one web process. At low
    #: load nothing waits; under load each job carries what arrived meanwhile, which keeps the
    #: workers' per-job cost (RQ's bookkeeping: ~2 ms) from falling behind (bench/RESULTS.md).
    commit_interval_ms: int = 2
    #: The same while jobs wait in the queue (the workers are behind): up to this long, or until
    #: 16 callbacks are in hand (see receiver.groupcommit).
    commit_behind_ms: int = 25
    #: Seconds a job may run before RQ stops it; a dead worker's job is retried this long plus
    #: a few seconds after it started (see workers.runner).
    job_timeout: int = 20
    #: Seconds a Redis command may take before the request is answered 503.
    redis_timeout: float = 2.0
    #: Seconds a client should wait before retrying after a 503.
    retry_after: int = 5
    #: Non-final calls older than this (seconds since their last event) are asked about over REST.
    stuck_after: int = 30 * 60
    #: Seconds between two sweeps (all workers together).
    sweep_interval: int = 60
    #: At most this many REST look-ups per sweep (Twilio rate-limits the REST API).
    sweep_limit: int = 50
    account_sid: str = ""
    api_key_sid: str = ""
    api_key_secret: str = field(default="", repr=False)
    twilio_api_base: str = "https://api.twilio.com"
    log_format: str = "auto"

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
        """Read the settings from ``environ`` (``os.environ`` in production, a dict in tests)."""

        def get(name: str) -> str | None:
            value = environ.get(name)
            return value.strip() if value is not None and value.strip() else None

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(name, f"must be an integer, got {raw!r}") from None
            if not low <= value <= high:
                raise ConfigError(name, f"must be between {low} and {high}, got {value}")
            return value

        redis_url = get("REDIS_URL") or DEFAULT_REDIS_URL
        if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("REDIS_URL", "must start with redis://, rediss:// or unix://")

        public_base_url = get("PUBLIC_BASE_URL")
        if public_base_url is not None:
            parts = urlsplit(public_base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("PUBLIC_BASE_URL", "must be an absolute http(s) URL")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ConfigError("PUBLIC_BASE_URL", "must not carry a query, a fragment or credentials")
            public_base_url = public_base_url.rstrip("/")

        queue_name = get("CALLSTATE_QUEUE") or "callstate"
        if not _QUEUE_NAME.fullmatch(queue_name):
            raise ConfigError("CALLSTATE_QUEUE", "may hold only letters, digits and _.:-")

        account_sid = get("TWILIO_ACCOUNT_SID") or ""
        if account_sid and not ACCOUNT_SID.fullmatch(account_sid):
            raise ConfigError("TWILIO_ACCOUNT_SID", "must be AC followed by 32 hex digits")

        log_format = get("LOG_FORMAT") or "auto"
        if log_format not in ("auto", "json", "console"):
            raise ConfigError("LOG_FORMAT", "must be auto, json or console")

        return cls(
            redis_url=redis_url,
            port=integer("PORT", 8000, 1, 65535),
            auth_token=get("TWILIO_AUTH_TOKEN") or "",
            previous_auth_token=get("TWILIO_AUTH_TOKEN_PREVIOUS") or "",
            subaccount_tokens=_subaccount_tokens(get("TWILIO_SUBACCOUNT_TOKENS")),
            public_base_url=public_base_url,
            forwarded_allow_ips=_forwarded_allow_ips(get("FORWARDED_ALLOW_IPS")),
            secret_key=get("SECRET_KEY") or "",
            queue_name=queue_name,
            retention_days=integer("CALLSTATE_RETENTION_DAYS", 30, 1, MAX_RETENTION_DAYS),
            max_body_bytes=integer("CALLSTATE_MAX_BODY_BYTES", 64 * 1024, 1024, 1024 * 1024),
            batch_max=integer("CALLSTATE_BATCH_MAX", 256, 1, 10_000),
            commit_interval_ms=integer("CALLSTATE_COMMIT_INTERVAL_MS", 2, 0, 1000),
            commit_behind_ms=integer("CALLSTATE_COMMIT_BEHIND_MS", 25, 0, 1000),
            job_timeout=integer("CALLSTATE_JOB_TIMEOUT", 20, 2, 3600),
            stuck_after=integer("CALLSTATE_STUCK_AFTER", 30 * 60, 60, 30 * 86_400),
            sweep_limit=integer("CALLSTATE_SWEEP_LIMIT", 50, 0, 10_000),
            sweep_interval=integer("CALLSTATE_SWEEP_INTERVAL", 60, 10, 3600),
            account_sid=account_sid,
            api_key_sid=get("TWILIO_API_KEY_SID") or "",
            api_key_secret=get("TWILIO_API_KEY_SECRET") or "",
            twilio_api_base=(get("TWILIO_API_BASE") or "https://api.twilio.com").rstrip("/"),
            log_format=log_format,
        )


def _subaccount_tokens(raw: str | None) -> dict[str, str]:
    """Parse ``AC...:token,AC...:token``; the error never echoes a token."""
    tokens: dict[str, str] = {}
    if raw is None:
        return tokens
    for position, item in enumerate(raw.split(","), start=1):
        sid, sep, token = item.strip().partition(":")
        if not sep or not ACCOUNT_SID.fullmatch(sid) or not token.strip():
            raise ConfigError(
                "TWILIO_SUBACCOUNT_TOKENS",
                f"entry {position} is not of the form AC<32 hex digits>:<auth token>",
            )
        tokens[sid] = token.strip()
    return tokens


def _forwarded_allow_ips(raw: str | None) -> str:
    """Validate the trusted proxy list early, so a typo is a start-up error and not a 403 later."""
    if raw is None:
        return "127.0.0.1"
    for entry in raw.split(","):
        item = entry.strip()
        if item and item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(
                    "FORWARDED_ALLOW_IPS", f"{item!r} is not an IP address or network"
                ) from None
    return raw
