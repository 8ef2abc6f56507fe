"""Settings come from the environment once, and a bad value names its variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callstate.errors import ConfigError
from callstate.settings import Settings


def error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_environ(environ)
    return info.value


class TestFromEnviron:
    def test_defaults(self) -> None:
        """An empty environment gives a local Redis, port 8000 and a 30-day retention."""
        settings = Settings.from_environ({})
        assert settings.redis_url == "redis://127.0.0.1:6379/0"
        assert settings.port == 8000
        assert settings.retention_days == 30

    def test_every_variable_is_read(self) -> None:
        """Each documented variable lands in its field."""
        settings = Settings.from_environ(
            {
                "PORT": "5000",
                "REDIS_URL": "rediss://:pw@redis.example:6380/1",
                "TWILIO_AUTH_TOKEN": "main",
                "TWILIO_AUTH_TOKEN_PREVIOUS": "old",
                "TWILIO_SUBACCOUNT_TOKENS": f"AC{'b' * 32}:sub1, AC{'c' * 32}:sub2",
                "PUBLIC_BASE_URL": "https://example.com/prefix/",
                "SECRET_KEY": "s" * 32,
                "FORWARDED_ALLOW_IPS": "10.0.0.0/8,127.0.0.1",
                "CALLSTATE_RETENTION_DAYS": "120",
            }
        )
        assert settings.port == 5000
        assert settings.redis_url.startswith("rediss://")
        assert settings.auth_token == "main"
        assert settings.previous_auth_token == "old"
        assert settings.subaccount_tokens == {f"AC{'b' * 32}": "sub1", f"AC{'c' * 32}": "sub2"}
        assert settings.public_base_url == "https://example.com/prefix"
        assert settings.retention_days == 120

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("PORT", "eighty"),
            ("PORT", "70000"),
            ("REDIS_URL", "http://localhost"),
            ("TWILIO_SUBACCOUNT_TOKENS", "AC123:token"),
            ("TWILIO_SUBACCOUNT_TOKENS", f"AC{'b' * 32}"),
            ("PUBLIC_BASE_URL", "example.com"),
            ("PUBLIC_BASE_URL", "https://example.com/?a=1"),
            ("CALLSTATE_RETENTION_DAYS", "121"),
            ("FORWARDED_ALLOW_IPS", "not-an-ip"),
            ("LOG_FORMAT", "xml"),
            ("CALLSTATE_COMMIT_INTERVAL_MS", "-1"),
            ("CALLSTATE_JOB_TIMEOUT", "1"),
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("SECRET_KEY", "x" * 31),
            ("CALLSTATE_REQUEST_TIMEOUT", "0"),
            ("CALLSTATE_MAX_CONNECTIONS", "0"),
        ],
    )
    def test_bad_value_names_the_variable(self, variable: str, value: str) -> None:
        """A malformed variable is a start-up error naming it."""
        assert error({variable: value}).variable == variable

    def test_tokens_never_appear_in_errors_or_repr(self) -> None:
        """Secrets stay out of error messages and of repr(settings)."""
        bad = error({"TWILIO_SUBACCOUNT_TOKENS": "ACnope:supersecret"})
        assert "supersecret" not in str(bad)
        key = "alsosecret" * 4
        settings = Settings.from_environ({"TWILIO_AUTH_TOKEN": "supersecret", "SECRET_KEY": key})
        assert "supersecret" not in repr(settings)
        assert "alsosecret" not in repr(settings)
        assert "short" not in str(error({"SECRET_KEY": "short"}))

    def test_web_requires_the_auth_token(self) -> None:
        """Signature validation cannot be switched off: no token, no web process."""
        with pytest.raises(ConfigError) as info:
            Settings.from_environ({}).require_web()
        assert info.value.variable == "TWILIO_AUTH_TOKEN"


class TestReadme:
    """README's configuration table is derived by hand from :class:`Settings`; keep them one."""

    @staticmethod
    def table() -> dict[str, str]:
        """Variable -> default as README's "Configuration" table states it (``""`` for none)."""
        readme = (Path(__file__).parent.parent / "README.md").read_text()
        section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
        rows: dict[str, str] = {}
        for line in section.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not cells[0].startswith("`"):
                continue
            names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
            stated = cells[1] if cells[1].startswith("`") else ""  # "(required by web)" is no default
            defaults = re.findall(r"`([^`]*)`", stated) or [""] * len(names)
            if len(defaults) != len(names):
                defaults = [cells[1]] * len(names)
            rows.update(zip(names, defaults, strict=True))
        return rows

    def test_every_variable_is_documented_and_nothing_else(self) -> None:
        """The table names exactly the variables that Settings reads."""
        assert set(self.table()) == set(Settings.variables())

    def test_documented_defaults_are_the_real_ones(self) -> None:
        """Where the table states a default, it is the field's default."""
        table = self.table()
        for name, default in Settings.variables().items():
            if table[name]:
                assert table[name] == str(default), name
