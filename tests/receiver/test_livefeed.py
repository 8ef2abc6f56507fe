"""The live feed: one stream reader per process for every open page, against a real redis-server.

Each test runs its own event loop (asyncio.run) and waits on what the feed delivers, with a
deadline, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import cast

import redis

from callstate import keys
from callstate.event import parse_callback
from callstate.reader import Change, Reader
from receiver import livefeed
from receiver.livefeed import Batch, LiveFeed, Reset, Subscription, event_stream
from tests.procs import eventually
from tests.redisserver import RedisServer
from tests.twiliosign import call_params, call_sid
from workers.store import Store

#: Short blocking reads, so that an idle feed notices quickly that its last page left.
BLOCK = 0.2
DEADLINE = 10.0


def write(client: redis.Redis, sid: str, status: str, sequence: int) -> None:
    Store(client, 86_400).apply([parse_callback("call", call_params(sid, status, sequence))])


async def until(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` (cheap, in the loop) until it holds; fail after DEADLINE seconds."""
    await eventually(predicate, what, timeout=DEADLINE)


async def next_batch(subscription: Subscription) -> Batch | Reset:
    async with asyncio.timeout(DEADLINE):
        while True:
            message = await subscription.queue.get()
            if isinstance(message, Batch | Reset):
                return message


#: The name the feed's connections give themselves, to count them in CLIENT LIST.
NAME = "test-live-feed"


def feed_on(server: RedisServer) -> tuple[LiveFeed, redis.Redis]:
    client = redis.Redis.from_url(server.url, socket_timeout=BLOCK + 5, client_name=NAME)
    return LiveFeed(Reader(client), block=BLOCK), client


def running(feed: LiveFeed) -> bool:
    return feed.running


def feed_connections(client: redis.Redis) -> list[dict[str, str]]:
    """The feed's connections to Redis now, idle or blocked."""
    return [entry for entry in client.client_list() if entry.get("name") == NAME]


class TestLiveFeed:
    def test_one_stream_reader_serves_every_page(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """Three pages subscribed: one connection blocks on the stream, and each page gets the change."""

        async def scenario() -> None:
            feed, client = feed_on(redis_server)
            try:
                async with feed.subscribe() as a, feed.subscribe() as b, feed.subscribe() as c:
                    await asyncio.to_thread(write, redis_client, call_sid(1), "ringing", 1)
                    for page in (a, b, c):
                        batch = await next_batch(page)
                        assert isinstance(batch, Batch)
                        assert [(ch.call_sid, ch.status) for ch in batch.changes] == [
                            (call_sid(1), "ringing")
                        ]
                    # One connection serves the three pages. What it runs at a given instant
                    # (an XRANGE of catch-up, an XREAD) is the order of concurrent work, so wait
                    # for it to block on the stream instead of sampling it once.
                    await until(
                        lambda: [c["cmd"] for c in feed_connections(redis_client)] == ["xread"],
                        "one connection blocking on the stream",
                    )
            finally:
                await feed.aclose()
                client.close()

        asyncio.run(scenario())

    def test_no_open_page_no_stream_reader(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """The feed reads, and holds a connection, only while a page listens; the next page
        starts it again from the end of the stream."""

        async def scenario() -> None:
            feed, client = feed_on(redis_server)
            try:
                assert not running(feed)
                async with feed.subscribe():
                    assert running(feed)
                await until(lambda: not running(feed), "the idle feed to stop")
                await until(lambda: not feed_connections(redis_client), "its connection to close")
                await asyncio.to_thread(write, redis_client, call_sid(2), "initiated", 0)  # nobody listens
                async with feed.subscribe() as page:
                    await asyncio.to_thread(write, redis_client, call_sid(3), "initiated", 0)
                    batch = await next_batch(page)
                    assert isinstance(batch, Batch)
                    assert [ch.call_sid for ch in batch.changes] == [call_sid(3)]
            finally:
                await feed.aclose()
                client.close()

        asyncio.run(scenario())

    def test_a_stream_faster_than_the_feed_is_skipped_and_pages_reload(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """A read that comes back full (more waiting) makes the feed jump to the stream's end and
        send Reset, instead of reading everything; later changes then come as usual."""

        async def scenario() -> None:
            client = redis.Redis.from_url(redis_server.url, socket_timeout=BLOCK + 5)
            feed = LiveFeed(Reader(client), block=BLOCK, interval=0.5, batch=3)
            try:
                async with feed.subscribe() as page:
                    # Five changes at once (one MULTI), more than one read of 3 takes.
                    pipe = redis_client.pipeline(transaction=True)
                    for n in range(5):
                        pipe.xadd(
                            keys.changes(0),
                            {"call": call_sid(n), "version": 1, "status": "queued", "final": 0},
                        )
                    await asyncio.to_thread(pipe.execute)
                    assert isinstance(await next_batch(page), Reset)
                    await asyncio.to_thread(write, redis_client, call_sid(9), "ringing", 1)
                    batch = await next_batch(page)
                    assert isinstance(batch, Batch)
                    assert [c.call_sid for c in batch.changes] == [call_sid(9)]
            finally:
                await feed.aclose()
                client.close()

        asyncio.run(scenario())

    def test_a_batch_keeps_the_latest_change_of_each_call(self) -> None:
        """Pages show the latest state: of several changes of a call in one read, the last one."""
        changes = [
            Change("1-0", call_sid(1), 1, "initiated", False),
            Change("1-1", call_sid(2), 1, "initiated", False),
            Change("1-2", call_sid(1), 2, "ringing", False),
        ]
        assert livefeed._latest(changes) == [changes[1], changes[2]]

    def test_a_page_that_falls_behind_is_told_to_reset_and_others_are_not(self) -> None:
        """A full queue is emptied and replaced by one Reset; other pages keep every batch."""
        slow, quick = Subscription(), Subscription()
        change = Change("1-0", call_sid(1), 1, "ringing", False)
        for _ in range(livefeed.QUEUE + 1):
            slow.offer(Batch([change], b""))
            quick.offer(Batch([change], b""))
            if not quick.queue.empty():
                quick.queue.get_nowait()
        assert slow.queue.qsize() == 1
        assert isinstance(slow.queue.get_nowait(), Reset)
        assert quick.queue.empty()


async def collect(stream: AsyncIterator[bytes], count: int) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(DEADLINE):
        async for chunk in stream:
            out.append(chunk)
            if len(out) == count:
                break
    return out


def ids_in(chunks: list[bytes]) -> list[str]:
    return [line[4:] for chunk in chunks for line in chunk.decode().splitlines() if line.startswith("id: ")]


def reader_of(client: redis.Redis) -> Callable[[str], list[Change]]:
    return lambda after: Reader(client).changes(after, count=livefeed.CATCH_UP + 1)


class TestEventStream:
    def test_it_catches_up_after_a_position_then_goes_live_each_entry_once(
        self, redis_server: RedisServer, redis_client: redis.Redis
    ) -> None:
        """After Last-Event-ID: the missed entries in one event, then live ones; none twice."""

        async def scenario() -> None:
            await asyncio.to_thread(write, redis_client, call_sid(1), "initiated", 0)
            after = Reader(redis_client).last_position()
            await asyncio.to_thread(write, redis_client, call_sid(1), "ringing", 1)  # missed
            feed, client = feed_on(redis_server)
            try:
                async with feed.subscribe() as page:
                    stream = event_stream(page, reader_of(redis_client), after)
                    first = await collect(stream, 2)
                    assert first[0] == b"retry: 2000\n\n"
                    assert b'"ringing"' in first[1]
                    await asyncio.to_thread(write, redis_client, call_sid(2), "initiated", 0)
                    live = await collect(stream, 1)
                    entries = [
                        e.decode()
                        for e, _ in cast(list[tuple[bytes, object]], redis_client.xrange(keys.changes(0)))
                    ]
                    assert ids_in(first + live) == entries[1:]
            finally:
                await feed.aclose()
                client.close()

        asyncio.run(scenario())

    def test_too_much_missed_is_a_reset(self, redis_server: RedisServer, redis_client: redis.Redis) -> None:
        """More missed entries than the catch-up allows: `reset` (reload the view), not a flood."""

        async def scenario() -> None:
            for n in range(3):
                await asyncio.to_thread(write, redis_client, call_sid(n), "initiated", 0)
            page = Subscription()
            stream = event_stream(page, reader_of(redis_client), "0-0", catch_up=2)
            chunks = await collect(stream, 2)
            assert chunks[1].startswith(b"event: reset\n")

        asyncio.run(scenario())

    def test_a_quiet_stream_sends_keep_alive_comments(self) -> None:
        """With nothing to say, a comment line every `keepalive` seconds (10 s in production, under
        the 15 s the contract allows and the 55 s after which Heroku's router cuts a connection)."""

        async def scenario() -> None:
            stream = event_stream(Subscription(), lambda after: [], None, keepalive=0.01)
            assert await collect(stream, 3) == [b"retry: 2000\n\n", b": keep-alive\n\n", b": keep-alive\n\n"]

        assert livefeed.KEEPALIVE <= 15
        asyncio.run(scenario())

    def test_the_stream_ends_when_the_feed_stops(self) -> None:
        """The feed's end (None) ends the page's stream, so that its browser reconnects."""

        async def scenario() -> None:
            page = Subscription()
            page.offer(None)
            chunks = [chunk async for chunk in event_stream(page, lambda after: [], None)]
            assert chunks == [b"retry: 2000\n\n"]

        asyncio.run(scenario())
