"""Advice for the release step: settings that parse but look wrong for where they run.

``callstate check`` refuses what cannot work (a :class:`~callstate.errors.ConfigError`); this module
finds what probably does not do what the operator meant, and says so as warnings, from the raw
environment (the parsed settings have already tidied some of it away). Pure: an environment in, lines
out.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

_CALLBACK_PATHS = ("/twilio/call-status", "/twilio/recording-status")


def base_url_warnings(environ: Mapping[str, str]) -> list[str]:
    """What looks wrong in ``PUBLIC_BASE_URL``, one sentence each (none when it is unset).

    Every callback's signature covers the public URL, so a wrong base URL turns every callback into
    a 403: ``http://`` where a platform router terminates TLS (Heroku's sets ``DYNO``; trusting every
    proxy, ``FORWARDED_ALLOW_IPS=*``, says the same), a trailing slash or a whole callback URL pasted
    in (the paths are appended to it), a query (refused at start-up anyway).
    """
    raw = (environ.get("PUBLIC_BASE_URL") or "").strip()
    if not raw:
        return []
    parts = urlsplit(raw)
    warnings = []
    behind_router = bool(environ.get("DYNO")) or (environ.get("FORWARDED_ALLOW_IPS") or "").strip() == "*"
    if parts.scheme == "http" and behind_router:
        warnings.append(
            f"PUBLIC_BASE_URL starts with http:// but this platform's router terminates TLS: Twilio "
            f"calls https://{parts.netloc}{parts.path}, and every callback will be 403 until it says so"
        )
    if raw.endswith("/"):
        warnings.append(
            "PUBLIC_BASE_URL ends with a slash: callstate drops it, so give Twilio "
            f"{raw.rstrip('/')}/twilio/call-status (no double slash), or the signatures will not match"
        )
    if parts.path.rstrip("/").endswith(_CALLBACK_PATHS):
        warnings.append(
            "PUBLIC_BASE_URL ends with a callback path: it is the base URL, callstate appends "
            "/twilio/call-status and /twilio/recording-status to it"
        )
    if parts.query:
        warnings.append("PUBLIC_BASE_URL has a query: put it in the URLs you give Twilio instead")
    if parts.hostname and parts.netloc != parts.netloc.lower():
        warnings.append(
            "PUBLIC_BASE_URL has capitals in its host: accepted (host names are case-insensitive), "
            "but give Twilio the same URL"
        )
    return warnings
