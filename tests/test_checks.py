"""The release step's advice about PUBLIC_BASE_URL (callstate.checks), pure."""

from __future__ import annotations

import pytest

from callstate.checks import base_url_warnings


def test_nothing_to_say_about_a_plain_https_base() -> None:
    assert base_url_warnings({"PUBLIC_BASE_URL": "https://calls.example.com", "DYNO": "web.1"}) == []


def test_nothing_to_say_when_unset() -> None:
    assert base_url_warnings({}) == []


@pytest.mark.parametrize("platform", [{"DYNO": "release.1"}, {"FORWARDED_ALLOW_IPS": "*"}])
def test_http_behind_a_tls_terminating_router_is_flagged(platform: dict[str, str]) -> None:
    """http:// where the router terminates TLS: Twilio calls https://, every callback would 403."""
    [warning] = base_url_warnings({"PUBLIC_BASE_URL": "http://app.example.com/cs", **platform})
    assert warning.startswith("PUBLIC_BASE_URL starts with http://")
    assert "https://app.example.com/cs" in warning


def test_http_on_a_machine_of_ones_own_is_left_alone() -> None:
    """Plain http on a VM or a laptop (no router) may be right: no warning."""
    assert base_url_warnings({"PUBLIC_BASE_URL": "http://localhost:8000"}) == []


def test_trailing_slash_is_flagged() -> None:
    [warning] = base_url_warnings({"PUBLIC_BASE_URL": "https://calls.example.com/"})
    assert "ends with a slash" in warning
    assert "https://calls.example.com/twilio/call-status" in warning


def test_a_pasted_callback_url_is_flagged() -> None:
    [warning] = base_url_warnings({"PUBLIC_BASE_URL": "https://calls.example.com/twilio/call-status"})
    assert "ends with a callback path" in warning


def test_a_query_is_flagged() -> None:
    [warning] = base_url_warnings({"PUBLIC_BASE_URL": "https://calls.example.com?tenant=a"})
    assert "has a query" in warning


def test_capitals_in_the_host_are_mentioned_as_accepted() -> None:
    [warning] = base_url_warnings({"PUBLIC_BASE_URL": "https://Calls.Example.com"})
    assert "accepted" in warning
