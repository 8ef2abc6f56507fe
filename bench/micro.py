"""Micro-measurements that comments in the code rely on (bench/RESULTS.md, "Micro-measurements").

Run ``.venv/bin/python -m bench.micro`` from the repository root (under a minute). In one process,
without Redis or HTTP, it times the pieces of a callback's CPU cost whose alternatives the code's
comments compare, on the terminal StatusCallback of the bench's traffic
(:func:`callstate.traffic.answered_call`, form-encoded as Twilio sends it):

* decoding the form body: :func:`receiver.form.parse_form`, ``urllib.parse.parse_qsl``, and each
  name and value decoded on its own with ``urllib.parse.unquote_plus``;
* the parameter part of the string to sign: :mod:`receiver.signature`'s, against sorting a set of
  the pairs (what it did before);
* percent-decoding the same bytes: the quoted-printable trick of ``receiver.form`` against
  ``urllib.parse.unquote_plus``;
* the request's log line: :class:`callstate.logs.LineBuffer` (a string appended, written in
  batches) against a record through ``logging`` with callstate's JSON formatter, both writing to
  memory so that the terminal or the disk is not what is measured;
* what the deployment's counters (:mod:`callstate.counters`) add: per callback, per group-commit
  batch, per batch that carries counts (its HINCRBYs queued and encoded, not sent), and a worker
  job's counts;
* one HTTP/1.1 request on a kept-alive connection through uvicorn's httptools protocol and through
  :class:`receiver.protocol.LimitedHttpProtocol` (its limits for slow and greedy clients), with a
  transport that only counts writes and an ASGI app that answers 204: what the limits add.

Each figure is this process's CPU time per call (``time.process_time``), in microseconds, the best
of 7 ``timeit`` repeats: CPU time, so that other processes on a busy machine do not count (they still
slow its caches), and the best, because the slower repeats measure that load rather than the code.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
import timeit
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

import uvloop
from redis import Redis
from redis.connection import Connection
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from callstate.counters import Tally, add_lags, callback_field, hincrby_all
from callstate.logs import JSONFormatter, LineBuffer, log_event
from callstate.settings import Settings
from callstate.traffic import answered_call
from receiver import form, signature
from receiver.protocol import LimitedHttpProtocol
from receiver.resources import STATE_KEY, Resources

_REPEATS = 7
_FIELDS = {"method": "POST", "path": "/twilio/call-status", "status": 204, "ms": 1.2, "call": "CA" + "0" * 32}


def best_us(function: Callable[[], object], number: int) -> float:
    """The least CPU time of :data:`_REPEATS` runs of ``number`` calls, in microseconds per call."""
    runs = timeit.repeat(function, number=number, repeat=_REPEATS, timer=time.process_time)
    return min(runs) / number * 1e6


def terminal_body() -> bytes:
    """The terminal StatusCallback of one answered call of the bench's traffic, form-encoded."""
    events = answered_call(random.Random(1), "CA" + "0" * 32)
    return urlencode(events[-1].params).encode()


def decoding(body: bytes) -> list[tuple[str, float]]:
    text = body.decode()

    def each_value() -> list[tuple[str, str]]:
        segments = (segment.partition("=") for segment in text.split("&"))
        return [(unquote_plus(name), unquote_plus(value)) for name, _, value in segments]

    def urllib_qsl() -> list[tuple[str, str]]:
        return parse_qsl(text, keep_blank_values=True)

    assert form.parse_form(body) == urllib_qsl() == each_value()
    assert form._decode(body) == unquote_plus(text)
    return [
        ("form body: receiver.form.parse_form", best_us(lambda: form.parse_form(body), 20_000)),
        ("form body: parse_qsl(keep_blank_values=True)", best_us(urllib_qsl, 20_000)),
        ("form body: unquote_plus on each name and value", best_us(each_value, 20_000)),
        ("percent-decoding: receiver.form (a2b_qp)", best_us(lambda: form._decode(body), 20_000)),
        ("percent-decoding: urllib.parse.unquote_plus", best_us(lambda: unquote_plus(text), 20_000)),
    ]


def signing(body: bytes) -> list[tuple[str, float]]:
    """The parameter part of the string to sign, on freshly decoded parameters each time (as a
    request has them: no string has its hash computed yet)."""

    def with_a_set(pairs: list[tuple[str, str]]) -> bytes:
        return "".join([name + value for name, value in sorted(set(pairs))]).encode()

    def fresh_us(function: Callable[[list[tuple[str, str]]], bytes], number: int = 20_000) -> float:
        runs = []
        for _ in range(_REPEATS):
            decoded = [form.parse_form(body) for _ in range(number)]
            started = time.process_time()
            for pairs in decoded:
                function(pairs)
            runs.append(time.process_time() - started)
        return min(runs) / number * 1e6

    assert signature._params_message(form.parse_form(body)) == with_a_set(form.parse_form(body))
    return [
        (
            "string to sign: receiver.signature (sorted, dedupe on a repeat)",
            fresh_us(signature._params_message),
        ),
        ("string to sign: sorted(set(pairs))", fresh_us(with_a_set)),
    ]


def log_lines() -> list[tuple[str, float]]:
    buffer = LineBuffer("callstate.web", "json", io.StringIO())
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("bench.micro")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def buffered() -> None:
        buffer.emit("request", **_FIELDS)
        if len(buffer._lines) > 1000:
            buffer.flush()  # as the app's periodic flush does; keeps memory flat

    def through_logging() -> None:
        log_event(logger, "request", **_FIELDS)

    return [
        ("log line: LineBuffer.emit", best_us(buffered, 50_000)),
        ("log line: logging + JSONFormatter", best_us(through_logging, 50_000)),
    ]


def counting() -> list[tuple[str, float]]:
    tally = Tally()
    endpoint = object()
    accepted = {endpoint: callback_field("call-status", 204)}  # as receiver.app.Receiver keeps them
    client, connection = Redis(), Connection()  # neither connects: commands are only encoded

    def encoded(counts: dict[str, int]) -> None:
        pipe = client.pipeline(transaction=False)
        hincrby_all(pipe, counts)
        connection.pack_commands([args for args, _ in pipe.command_stack])

    def carry() -> None:
        tally.add(accepted[endpoint], 30)
        tally.add("callbacks:call-status:403")
        encoded(tally.take())

    job = {"events:new": 6, "events:duplicate": 1, "state_changes:ringing": 2}
    job |= {"state_changes:completed": 3, "lag_bucket:0.01": 4, "lag_bucket:0.025": 3, "lag_sum_us": 70_000}
    received = [time.time() - 0.01] * 100

    def lags() -> None:
        add_lags({}, [time.time() - at for at in received])

    tally.take()
    empty = best_us(lambda: encoded({}), 5_000)  # a pipeline with nothing in it, subtracted
    return [
        ("metrics: a callback counted (Tally.add)", best_us(lambda: tally.add(accepted[endpoint]), 200_000)),
        (
            "metrics: a batch carrying nothing (Tally.take)",
            best_us(lambda: tally.take(older_than=9), 200_000),
        ),
        ("metrics: a batch carrying 2 counters", best_us(carry, 5_000) - empty),
        ("metrics: a worker job's 7 counters", best_us(lambda: encoded(job), 5_000) - empty),
        ("metrics: an event's lag (per event)", best_us(lags, 2_000) / len(received)),
    ]


class _CountingTransport:
    """What a protocol needs of a transport, minus the socket: writes are counted, not sent."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _no_content(scope: object, receive: object, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def connections() -> list[tuple[str, float]]:
    request = (
        b"POST /twilio/call-status HTTP/1.1\r\nHost: calls.example.com\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: " + b"a" * 28 + b"\r\n"
        b"Content-Length: 20\r\n\r\nCallSid=CA1234567890"
    )
    # The protocol reads its settings from the app's resources; nothing else of them is used.
    resources = Resources(**dict.fromkeys(Resources.__dataclass_fields__) | {"settings": Settings()})
    config = Config(app=_no_content, lifespan="off", log_config=None, access_log=False)
    config.load()

    async def per_request(protocol_class: type[HttpToolsProtocol], number: int) -> float:
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={STATE_KEY: resources})
        transport = _CountingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        started = time.process_time()
        for _ in range(number):
            protocol.data_received(request)
            while transport.writes % 2:  # the answer is two writes: its head, then its (empty) body
                await asyncio.sleep(0)
            await asyncio.sleep(0)
        return (time.process_time() - started) / number * 1e6

    async def best(protocol_class: type[HttpToolsProtocol]) -> float:
        return min([await per_request(protocol_class, 20_000) for _ in range(_REPEATS)])

    async def both() -> list[tuple[str, float]]:
        return [
            ("a request through uvicorn's httptools protocol", await best(HttpToolsProtocol)),
            ("a request through receiver.protocol's limits", await best(LimitedHttpProtocol)),
        ]

    return uvloop.run(both())


def main() -> None:
    body = terminal_body()
    print(f"terminal StatusCallback: {len(body)} bytes, {len(form.parse_form(body))} parameters")
    rows = decoding(body) + signing(body) + log_lines() + counting() + connections()
    width = max(len(name) for name, _ in rows)
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:6.1f} us")


if __name__ == "__main__":
    main()
