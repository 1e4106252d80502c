"""Bounded work and memory per connection: a client cannot make the server hold more for it
than its window of gifts in flight, its send queue, and a few seconds of waiting for it."""

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from giftstream.store.embedded import EmbeddedValkey
from support import SHARED_ENV, Api, Client, ServerProcess, running

# 200,000 gift frames pipelined on one connection grew the server by 318 MB when every frame
# became a task at once (issue 15). Read only as the window frees, they cost the window's
# gifts and what the sockets hold: this bound leaves room for the allocator's noise.
FLOOD_GIFTS = 200_000
FLOOD_RSS_BOUND_MB = 40


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid`, in MB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def own_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    with running(ServerProcess(valkey.url, env=SHARED_ENV)) as s:
        yield s


async def flood(client: Client, gifts: int, tag: str) -> int:
    """Send `gifts` gift frames to a room the client is not in, as fast as the connection
    takes them, while reading their answers; the number of `not_in_room` errors."""
    refused = 0

    async def read() -> None:
        nonlocal refused
        while refused < gifts:
            frame = msgpack.unpackb(await client.ws.recv(), raw=False)
            for f in frame["frames"] if frame["t"] == "batch" else [frame]:
                if f["t"] == "error" and f["code"] == "not_in_room":
                    refused += 1

    reading = asyncio.create_task(read())
    try:
        for n in range(gifts):
            await client.send_gift("nowhere", "rose", f"{tag}-{n}")
        await asyncio.wait_for(reading, 120)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    return refused


async def test_200000_gift_frames_on_one_connection_leave_server_memory_bounded(
    own_server: ServerProcess,
) -> None:
    assert own_server.process is not None
    pid = own_server.process.pid
    api = Api(own_server.base_url)
    try:
        user = await api.user(coins=0)
        client = await Client.open(own_server.ws_url)
        try:
            await client.auth(user)
            # A first flood warms the worker's pools, so that the figure after is the flood's.
            assert await flood(client, 5_000, "warm") == 5_000
            before = rss_mb(pid)
            assert await flood(client, FLOOD_GIFTS, "flood") == FLOOD_GIFTS
            after = rss_mb(pid)
        finally:
            await client.close()
    finally:
        await api.aclose()
    print(f"server RSS {before:.0f} -> {after:.0f} MB over {FLOOD_GIFTS} gift frames")
    assert after - before < FLOOD_RSS_BOUND_MB


# -- deadlines -------------------------------------------------------------------------------

AUTH_TIMEOUT_S = 1.0
PING_INTERVAL_S = 0.5
PING_TIMEOUT_S = 0.5
# How long after its deadline a connection must be seen closed: a loaded machine is slow.
CLOSE_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def deadline_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = {
        **SHARED_ENV,
        "GIFTSTREAM_AUTH_TIMEOUT_S": str(AUTH_TIMEOUT_S),
        "GIFTSTREAM_WS_PING_INTERVAL_S": str(PING_INTERVAL_S),
        "GIFTSTREAM_WS_PING_TIMEOUT_S": str(PING_TIMEOUT_S),
    }
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


async def close_code_of(client: Client, within_s: float) -> int | None:
    """The code the server closes `client` with (its frames before are discarded)."""
    try:
        async with asyncio.timeout(within_s):
            while True:
                await client.ws.recv()
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd is not None else None


async def test_a_websocket_that_does_not_authenticate_in_time_is_closed_with_1008(
    deadline_server: ServerProcess,
) -> None:
    api = Api(deadline_server.base_url)
    try:
        user = await api.user()
        silent = await Client.open(deadline_server.ws_url)
        authenticated = await Client.open(deadline_server.ws_url)
        try:
            await authenticated.auth(user)
            assert await close_code_of(silent, AUTH_TIMEOUT_S + CLOSE_WITHIN_S) == 1008
            assert "authenticate within" in (silent.ws.close_reason or "")
            # Opened at the same time, past the same deadline: authenticated, it stays open.
            pong = await authenticated.request({"t": "ping", "id": "still"}, "pong")
            assert pong["t"] == "pong"
        finally:
            await silent.close()
            await authenticated.close()
    finally:
        await api.aclose()


async def test_a_connection_that_does_not_answer_pings_is_closed_and_one_that_only_watches_is_not(
    deadline_server: ServerProcess,
) -> None:
    api = Api(deadline_server.base_url)
    try:
        user = await api.user()
        watcher = await Client.open(deadline_server.ws_url)  # answers pings, sends nothing
        try:
            await watcher.auth(user)
            code, pings = await mute_connection(deadline_server, user.token)
            assert pings >= 1
            assert code == 1011
            pong = await watcher.request({"t": "ping", "id": "alive"}, "pong")
            assert pong["t"] == "pong"
        finally:
            await watcher.close()
    finally:
        await api.aclose()


async def mute_connection(server: ServerProcess, token: str) -> tuple[int | None, int]:
    """A connection that authenticates, then reads everything and never writes again (no
    pongs): the server's close code and how many pings it got until the server closed it."""
    protocol = ClientProtocol(parse_uri(server.ws_url))
    protocol.send_request(protocol.connect())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"".join(protocol.data_to_send()))
        pings = 0
        code: int | None = None
        authenticated = False
        async with asyncio.timeout(PING_INTERVAL_S + PING_TIMEOUT_S + CLOSE_WITHIN_S):
            while data := await reader.read(65536):
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Response) and not authenticated:
                        authenticated = True
                        protocol.send_binary(msgpack.packb({"t": "auth", "token": token}))
                        writer.write(b"".join(protocol.data_to_send()))
                    elif isinstance(event, Frame) and event.opcode is Opcode.PING:
                        pings += 1
                    elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        code = Close.parse(event.data).code
                protocol.data_to_send()  # the pongs the protocol would send: never sent
        return code, pings
    finally:
        writer.close()
