"""Slow and greedy HTTP clients (issue #15, item 4, HTTP half), against real servers: a connection
that trickles its headers or its body is closed once its deadline passes, an idle one too, header
bytes are capped, and one address holds only so many HTTP connections at once.

Each test polls for the server's close with a deadline well past the configured timeout; none
asserts how fast it came.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from giftstream.store.embedded import EmbeddedValkey
from support import Api, ServerProcess, User, raw_connected, running, store, user_accounts

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 4096
MAX_PER_IP = 3
# How long a test waits for the server to close a slow connection (far beyond the timeouts).
CLOSE_DEADLINE_S = 15.0
TRICKLE_EVERY_S = 0.2
# Loopback is neither trusted nor a proxy here, so the per-address limits apply to the tests.
UNTRUSTED = {"GIFTSTREAM_TRUSTED_IPS": "none", "FORWARDED_ALLOW_IPS": "192.0.2.1"}


@pytest.fixture(scope="module")
def slow_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = {
        **UNTRUSTED,
        "GIFTSTREAM_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GIFTSTREAM_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "GIFTSTREAM_HTTP_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    }
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


@pytest.fixture(scope="module")
def bounded_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = {**UNTRUSTED, "GIFTSTREAM_HTTP_MAX_CONNECTIONS_PER_IP": str(MAX_PER_IP)}
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


class Raw:
    """A raw TCP connection to the server, to send exactly the bytes a slow client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: bytes) -> None:
        """One byte every TRICKLE_EVERY_S, as a slowloris client does, until the server hangs up."""
        with contextlib.suppress(ConnectionError):
            for i in range(len(data)):
                await self.send(data[i : i + 1])
                await asyncio.sleep(TRICKLE_EVERY_S)

    async def closed_by_server(self) -> bytes:
        """Everything the server sent until it closed the connection (fails past the deadline)."""
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            with contextlib.suppress(ConnectionError):
                while chunk := await self.reader.read(65536):
                    self.received += chunk
        return self.received


@contextlib.asynccontextmanager
async def raw(server: ServerProcess) -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def trickling(conn: Raw, data: bytes) -> AsyncIterator[None]:
    task = asyncio.create_task(conn.trickle(data))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 500


async def test_a_connection_trickling_its_headers_is_closed_with_408(
    slow_server: ServerProcess,
) -> None:
    async with raw(slow_server) as conn, trickling(conn, SLOW_HEADERS):
        answer = await conn.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"request_timeout"' in answer


async def test_a_connection_that_sends_nothing_is_closed(slow_server: ServerProcess) -> None:
    async with raw(slow_server) as conn:
        answer = await conn.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_kept_alive_connection_trickling_its_next_request_is_closed(
    slow_server: ServerProcess,
) -> None:
    """Every byte cancels uvicorn's keep-alive timer: the header deadline covers the second
    request of a connection as it does the first."""
    async with raw(slow_server) as conn:
        await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            first = await conn.reader.readuntil(b'{"status":"ok"}')
        assert first.startswith(b"HTTP/1.1 200 "), first
        async with trickling(conn, SLOW_HEADERS):
            answer = await conn.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_kept_alive_connection_sending_only_blank_lines_is_closed(
    slow_server: ServerProcess,
) -> None:
    """The parser skips empty lines between requests without beginning one."""
    async with raw(slow_server) as conn:
        await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            await conn.reader.readuntil(b'{"status":"ok"}')
        async with trickling(conn, b"\r\n" * 200):
            answer = await conn.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_connection_trickling_its_body_is_closed(
    slow_server: ServerProcess, valkey: EmbeddedValkey
) -> None:
    head = (
        b"POST /v1/dev/users HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 200\r\n\r\n"
    )
    async with store(valkey.url) as redis:
        before = await user_accounts(redis)
        async with raw(slow_server) as conn:
            await conn.send(head)
            async with trickling(conn, b'{"name": "' + b"s" * 180 + b'", "region": "US"}'):
                answer = await conn.closed_by_server()
        assert answer == b"", answer[:200]  # cut off, never answered
        assert await user_accounts(redis) == before  # and the user was not created


async def test_headers_over_the_byte_limit_get_431_and_a_close(slow_server: ServerProcess) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * MAX_HEADER_BYTES
    async with raw(slow_server) as conn:
        await conn.send(big + b"\r\n\r\n")
        answer = await conn.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"headers_too_large"' in answer


async def test_a_prompt_request_is_answered_by_the_slow_server(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url) as http:
        response = await http.post("/v1/dev/users", json={"name": "prompt", "region": "US"})
    assert response.status_code == 200, response.text


async def test_one_address_holds_only_so_many_http_connections(
    bounded_server: ServerProcess,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(raw(bounded_server)) for _ in range(MAX_PER_IP)]
        # The server has counted them once each has been answered once.
        for conn in held:
            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            async with asyncio.timeout(CLOSE_DEADLINE_S):
                await conn.reader.readuntil(b'{"status":"ok"}')
        async with raw(bounded_server) as extra:
            answer = await extra.closed_by_server()
        assert answer.startswith(b"HTTP/1.1 429 "), answer[:200]
        assert b'"rate_limited"' in answer
        # One of them leaves: a new connection is served again (once the server saw it go).
        held[0].writer.close()
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            while True:
                async with httpx.AsyncClient(base_url=bounded_server.base_url) as http:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                await asyncio.sleep(0.05)


async def test_a_websocket_is_not_held_to_the_http_deadlines(
    slow_server: ServerProcess, api_user: User
) -> None:
    """The deadlines end at the upgrade: a WebSocket quiet for longer than both is still open."""
    async with raw_connected(slow_server, api_user) as ws:
        # The time under test: past every HTTP deadline of this server.
        await asyncio.sleep(HEADER_TIMEOUT_S + BODY_TIMEOUT_S + 1.0)
        pong = await ws.request({"t": "ping", "id": "after"}, "pong")
        assert (pong["t"], pong["id"]) == ("pong", "after"), pong


@pytest.fixture
async def api_user(slow_server: ServerProcess) -> AsyncIterator[User]:
    api = Api(slow_server.base_url)
    try:
        yield await api.user()
    finally:
        await api.aclose()
