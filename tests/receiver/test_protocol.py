"""Slow and greedy clients against a real ``callstate web`` (uvicorn, httptools, uvloop).

Raw sockets, since an HTTP client cannot be told to dribble or to send a 1 MiB header. No test
asserts a duration: each waits for what the server does (an answer, a close) with a generous
deadline. The slow-client tests set the request timeout to 3 s, long enough for a loaded machine to
send a request's first bytes right after connecting, short enough to keep the waits short. Ordinary
clients are every other test that starts a web process: all of them go through these limits.

Cost: four web processes, ~15 s in all.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from receiver.protocol import MAX_HEADER_BYTES
from tests.procs import environment, start_web, wait_until
from tests.redisserver import RedisServer, free_port
from tests.twiliosign import TOKEN, call_params, call_sid, form_request

#: Generous: a loaded machine is slow, but not this slow.
DEADLINE = 30.0


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.settimeout(DEADLINE)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it, after sending)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def health(port: int) -> int:
    """The status of GET /healthz on a new connection."""
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=DEADLINE).status_code


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


#: The header the flood test would send if the server kept reading.
FLOOD = 256 * 1024 * 1024


def flood_headers(port: int) -> tuple[bytes, int]:
    """Send a request whose header never ends, until the server answers (or FLOOD bytes are
    sent); return the answer and how many bytes of the header went out."""
    chunk = b"a" * 65536
    sent = 0
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
        sock.setblocking(False)
        while sent < FLOOD:
            readable, writable, _ = select.select([sock], [sock], [], DEADLINE)
            if readable or not writable:
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue
        sock.setblocking(True)
        sock.settimeout(DEADLINE)
        return read_answer(sock), sent


def web_env(redis_server: RedisServer, port: int, **extra: str) -> dict[str, str]:
    """The web process's environment: requests must arrive within 3 s unless ``extra`` says otherwise."""
    limits = {"CALLSTATE_REQUEST_TIMEOUT": "3", **extra}
    return environment(PORT=str(port), REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN=TOKEN, **limits)


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A web process whose requests must arrive within 3 s; yields its port."""
    port = free_port()
    process = start_web(web_env(redis_server, port), tmp_path_factory.mktemp("web"), port)
    yield port
    process.stop()


class TestSlowClients:
    def test_an_idle_connection_is_closed(self, web: int) -> None:
        """A client that connects and sends nothing is disconnected, unanswered."""
        with connect(web) as sock:
            assert read_answer(sock) == b""

    def test_a_dribbled_callback_is_cut_off_with_408_and_not_stored(
        self, web: int, redis_client: redis.Redis
    ) -> None:
        """A signed callback whose body arrives a byte at a time gets 408 once the request timeout
        passes, though bytes keep coming; it is never answered 204 and never queued."""
        url = f"http://127.0.0.1:{web}/twilio/call-status"
        body, headers = form_request(url, call_params(call_sid(0x408), "completed", 3))
        head = (
            f"POST /twilio/call-status HTTP/1.1\r\nHost: 127.0.0.1:{web}\r\nContent-Length: {len(body)}\r\n"
        )
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        with connect(web) as sock:
            sock.sendall(head.encode() + body[:10])
            for byte in body[10:-1]:
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable:
                    break
                sock.sendall(bytes([byte]))
            else:
                pytest.fail("the whole body but one byte was sent and the server had not answered")
            answer = read_answer(sock)
        assert status_of(answer) == 408, answer[:200]
        assert redis_client.llen("rq:queue:callstate") == 0

    def test_a_huge_header_block_gets_431_and_is_not_read(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """A request whose headers go on and on gets 431, and the server stops reading it: the
        client cannot push more than the sockets' buffers (a few MiB) of its 256 MiB header. (A
        patient server: only the header limit can answer.)"""
        port = free_port()
        process = start_web(web_env(redis_server, port, CALLSTATE_REQUEST_TIMEOUT="120"), tmp_path, port)
        try:
            answer, sent = flood_headers(port)
        finally:
            process.stop()
        assert status_of(answer) == 431, answer[:200]
        assert str(MAX_HEADER_BYTES).encode() in answer
        assert sent < FLOOD // 2


class TestGreedyClients:
    def test_requests_past_the_connection_limit_get_503(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """With CALLSTATE_MAX_CONNECTIONS=3 and two idle connections open, a request is served;
        with three, the next one gets 503; once they close, requests are served again."""
        port = free_port()
        env = web_env(redis_server, port, CALLSTATE_MAX_CONNECTIONS="3", CALLSTATE_REQUEST_TIMEOUT="120")
        process = start_web(env, tmp_path, port)
        idle: list[socket.socket] = []
        try:
            idle += [connect(port), connect(port)]
            assert health(port) == 200
            idle.append(connect(port))
            assert health(port) == 503
            for sock in idle:
                sock.close()
            wait_until(lambda: health(port) == 200, what="requests served again")
        finally:
            for sock in idle:
                sock.close()
            process.stop()

    def test_connections_past_the_descriptor_limit_are_closed_and_logged(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """Under a descriptor limit of 128 (systemd's default is 1,024), a flood of idle connections
        is cut short by the process itself, which says so, and keeps listening: once the flood
        ends, requests are served."""
        port = free_port()
        env = web_env(redis_server, port, CALLSTATE_REQUEST_TIMEOUT="120")
        process = start_web(env, tmp_path, port, wrapper=["prlimit", "--nofile=128:128", "--"])
        flood: list[socket.socket] = []
        try:
            for _ in range(150):
                flood.append(connect(port))
            wait_until(lambda: '"kind":"file_descriptors"' in process.output(), what="the refusal logged")
            for sock in flood:
                sock.close()
            wait_until(lambda: health(port) == 200, what="requests served again")
        finally:
            for sock in flood:
                sock.close()
            process.stop()
        # The start-up line: 128 descriptors are too few for CALLSTATE_MAX_CONNECTIONS (1,000).
        assert '"event":"descriptor_limit_low"' in process.output()
