"""The web process's resources: what every request handler uses, built once per process.

The lifespan of :func:`receiver.app.create_app` builds one frozen :class:`Resources` when the
process starts and hands it to Starlette as lifespan state; uvicorn gives every request a copy of
that state, and :meth:`Resources.of` is the one typed way to take it back out. Handlers therefore
see exactly these objects, typed, and a reader can follow each one to where it is made (the
pattern of svcs and of Flask's ``create_app``, without a registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from redis import Redis

from callstate.connection import StoreHandle
from callstate.reader import Reader
from callstate.settings import Settings
from receiver.groupcommit import GroupCommit
from receiver.livefeed import LiveFeed
from receiver.publicurl import TrustedProxies
from receiver.rejections import RejectionLog
from receiver.signature import Keyring

#: The key of :class:`Resources` in the lifespan state (``scope["state"]``).
STATE_KEY: Final = "callstate.resources"


@dataclass(frozen=True, slots=True)
class Resources:
    """Everything the web process's handlers need, built by the lifespan and closed by it."""

    settings: Settings
    #: The Redis client of the probes (REDIS_URL; a connection pool, thread-safe).
    redis: Redis
    #: The store the read API reads (STORE_REDIS_URL, by default that same client).
    store: StoreHandle
    #: Where callbacks go: the group commit into RQ (see receiver.groupcommit).
    commit: GroupCommit
    #: The auth tokens signatures are checked against.
    keyring: Keyring
    #: The peers whose X-Forwarded-* headers are believed when no PUBLIC_BASE_URL is set.
    trusted: TrustedProxies
    #: Says why a signature was refused, at most once per interval (see receiver.rejections).
    rejections: RejectionLog
    #: The live page's way into the store (receiver.dashboard), on ``redis``.
    reader: Reader
    #: The change stream for the live page's open tabs: one blocking reader per process, on a
    #: client of its own that connects only while a page is open (receiver.livefeed).
    feed: LiveFeed

    @staticmethod
    def of(scope: Any) -> Resources:
        """The resources of the app serving ``scope`` (an ASGI scope, or a Starlette Request).

        Raises :class:`LookupError` when the lifespan has not run, which is a bug of the server
        setup: uvicorn and Starlette's TestClient both run it.
        """
        resources = scope["state"][STATE_KEY]
        if not isinstance(resources, Resources):
            raise LookupError("the web app's lifespan has not built its resources")
        return resources
