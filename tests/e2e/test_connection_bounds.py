"""Bounded work and memory per connection: a client cannot make the server hold more for it
than its window of gifts in flight, its send queue, and a few seconds of waiting for it."""

import asyncio
import contextlib
import itertools
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from giftstream.store.embedded import EmbeddedValkey
from support import (
    BIG_NAME,
    SHARED_ENV,
    Api,
    Client,
    ServerProcess,
    User,
    eventually,
    logged,
    metric,
    raw_connected,
    running,
)

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
    # A flood's frames wait in the sockets, and so does a pong behind them: on a loaded machine
    # that can take longer than a keepalive allows, which is not what this server is for.
    env = {**SHARED_ENV, "GIFTSTREAM_WS_PING_INTERVAL_S": "600"}
    with running(ServerProcess(valkey.url, env=env)) as s:
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
        client = await Client.open(own_server.ws_url, ping_interval=None)
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


# -- viewers that never read -----------------------------------------------------------------

SILENT_VIEWERS = 2_000
# Small, so that the viewers fill their queues after a few hundred gifts: the figures scale.
SILENT_QUEUE_BYTES = 64 * 1024
SILENT_SNDBUF = 8 * 1024
# The server's growth while every viewer's queue is full: what their queues may hold, and what
# a worker allocates besides for a storm (frames in flight, pools).
SILENT_RSS_SLACK_MB = 60
SILENT_GIFTS = 600
GIFTERS = 4
GIFTS_IN_FLIGHT = 16


@pytest.fixture(scope="module")
def silent_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = {
        **SHARED_ENV,
        "GIFTSTREAM_SEND_QUEUE_BYTES": str(SILENT_QUEUE_BYTES),
        "GIFTSTREAM_SOCKET_SEND_BUFFER_BYTES": str(SILENT_SNDBUF),
        "GIFTSTREAM_MAX_CONNECTIONS_PER_USER": str(SILENT_VIEWERS),
        # Neither closed nor pinged away while the test measures them.
        "GIFTSTREAM_SLOW_READER_TIMEOUT_S": "600",
        "GIFTSTREAM_WS_PING_INTERVAL_S": "600",
    }
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


async def silent_viewer(server: ServerProcess, token: str, room: str) -> asyncio.StreamWriter:
    """A viewer that joins `room` and then never reads; its socket's receive buffer is small, so
    that what the server sends it stays on the server's side."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    protocol = ClientProtocol(parse_uri(server.ws_url))
    protocol.send_request(protocol.connect())
    writer.write(b"".join(protocol.data_to_send()))
    answered: set[str] = set()
    while "joined" not in answered:
        data = await asyncio.wait_for(reader.read(65536), 30)
        assert data, "the server closed a viewer before it joined"
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Response):
                for frame in ({"t": "auth", "token": token}, {"t": "join", "room": room}):
                    protocol.send_binary(msgpack.packb(frame))
                writer.write(b"".join(protocol.data_to_send()))
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                answered.add(msgpack.unpackb(event.data, raw=False)["t"])
    # From here on nothing reads the socket: asyncio's reader would otherwise go on taking up
    # to twice its limit (128 KiB) off it, and the frames of a short storm could all fit there.
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    return writer


async def gift_storm(server: ServerProcess, gifter: User, room: str, gifts: int, tag: str) -> int:
    """`gifts` gifts, `GIFTS_IN_FLIGHT` at a time; how many were acked."""
    acked = 0
    async with raw_connected(server, gifter) as ws:
        await ws.join(room)
        for start in range(0, gifts, GIFTS_IN_FLIGHT):
            ids = [f"{tag}-{n}" for n in range(start, min(start + GIFTS_IN_FLIGHT, gifts))]
            for rid in ids:
                await ws.send_gift(room, "confetti", rid)
            waiting = set(ids)
            while waiting:
                frame = await ws.recv(30)
                if frame["t"] in ("ack", "error") and frame.get("id") in waiting:
                    waiting.discard(frame["id"])
                    acked += frame["t"] == "ack"
    return acked


async def test_2000_viewers_that_never_read_hold_no_more_than_their_queues(
    silent_server: ServerProcess,
) -> None:
    assert silent_server.process is not None
    pid = silent_server.process.pid
    api = Api(silent_server.base_url)
    writers: list[asyncio.StreamWriter] = []
    try:
        host = await api.user(role="host")
        room = await api.open_room(host)
        viewer = await api.user()
        for _ in range(0, SILENT_VIEWERS, 100):
            writers += await asyncio.gather(
                *(silent_viewer(silent_server, viewer.token, room) for _ in range(100))
            )
        gifters = []
        for _ in range(GIFTERS):
            r = await api.http.post(
                "/v1/dev/users", json={"name": BIG_NAME, "region": "US", "coins": 10_000_000}
            )
            gifters.append(User(r.json()["user"], r.json()["token"]))
        dropped_before = await metric(api, "giftstream_frames_dropped_total")
        before = rss_mb(pid)
        per_gifter = SILENT_GIFTS // GIFTERS
        acked = await asyncio.gather(
            *(
                gift_storm(silent_server, g, room, per_gifter, f"s{i}")
                for i, g in enumerate(gifters)
            )
        )
        after = rss_mb(pid)
        dropped = await metric(api, "giftstream_frames_dropped_total") - dropped_before
        sndbufs = await server_send_buffers(silent_server.port)
    finally:
        for writer in writers:
            writer.close()
        await api.aclose()
    queues_mb = SILENT_VIEWERS * SILENT_QUEUE_BYTES / 2**20
    print(
        f"{SILENT_VIEWERS} silent viewers, {sum(acked)} gifts: server RSS {before:.0f} ->"
        f" {after:.0f} MB (queues {queues_mb:.0f} MB), {dropped:.0f} frames dropped,"
        f" send buffers {sorted(set(sndbufs))}"
    )
    assert sum(acked) == per_gifter * GIFTERS
    # The viewers' queues filled, and dropped what came after (a viewer gets one message a
    # tick, a batch of that tick's gifts: a few ticks of the storm, a few drops each).
    assert dropped >= SILENT_VIEWERS
    # The kernel's part is fixed: each WebSocket's send buffer is the setting's (doubled by
    # Linux), not grown up to tcp_wmem's maximum (the others are the test's HTTP connection).
    assert sum(tb <= 2 * SILENT_SNDBUF for tb in sndbufs) >= SILENT_VIEWERS
    assert after - before < queues_mb + SILENT_RSS_SLACK_MB


async def server_send_buffers(port: int) -> list[int]:
    """The send buffer (skmem `tb`) of every established socket of the server on `port`."""
    proc = await asyncio.create_subprocess_exec(
        "ss", "-tnmH", "state", "established", f"sport = :{port}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return [int(tb) for tb in re.findall(r"\btb(\d+)\b", out.decode())]


# -- readers that stay behind ----------------------------------------------------------------

BEHIND_TIMEOUT_S = 2.0
# Time to fill a queue before the keepalive's first ping.
FILL_PING_INTERVAL_S = 8.0
# uvicorn's close handshake and the session's abort give a peer that does not read 10 s each.
DROPPED_WITHIN_S = 40.0


def behind_env(**extra: str) -> dict[str, str]:
    return {
        **SHARED_ENV,
        "GIFTSTREAM_SEND_QUEUE_BYTES": str(SILENT_QUEUE_BYTES),
        "GIFTSTREAM_SOCKET_SEND_BUFFER_BYTES": str(SILENT_SNDBUF),
        **extra,
    }


@pytest.fixture(scope="module")
def behind_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = behind_env(
        GIFTSTREAM_SLOW_READER_TIMEOUT_S=str(BEHIND_TIMEOUT_S),
        GIFTSTREAM_WS_PING_INTERVAL_S="600",
    )
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


@pytest.fixture(scope="module")
def keepalive_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = behind_env(
        GIFTSTREAM_SLOW_READER_TIMEOUT_S="600",
        GIFTSTREAM_WS_PING_INTERVAL_S=str(FILL_PING_INTERVAL_S),
        GIFTSTREAM_WS_PING_TIMEOUT_S=str(PING_TIMEOUT_S),
    )
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


async def server_holds(server: ServerProcess, client_port: int) -> bool:
    """Whether the server still has an open connection to the client's port."""
    proc = await asyncio.create_subprocess_exec(
        *("ss", "-tnH", "state", "established"),
        *(f"( sport = :{server.port} and dport = :{client_port} )",),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return bool(out.strip())


async def fill_queue_of(
    server: ServerProcess, api: Api, room: str, done: Callable[[], Awaitable[bool]], what: str
) -> None:
    """Gift in `room`, 200 gifts at a time, until `done()`."""
    r = await api.http.post(
        "/v1/dev/users", json={"name": BIG_NAME, "region": "US", "coins": 10_000_000}
    )
    gifter = User(r.json()["user"], r.json()["token"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DROPPED_WITHIN_S
    for n in itertools.count():
        await gift_storm(server, gifter, room, 200, f"fill{n}")
        if await done():
            return
        assert loop.time() < deadline, f"not within {DROPPED_WITHIN_S} s: {what}"


async def dropping_frames(api: Api) -> Callable[[], Awaitable[bool]]:
    """A check that holds once the server has dropped frames for want of room."""
    before = await metric(api, "giftstream_frames_dropped_total")

    async def check() -> bool:
        return await metric(api, "giftstream_frames_dropped_total") > before

    return check


async def until_dropped(server: ServerProcess, writer: asyncio.StreamWriter) -> None:
    port = writer.get_extra_info("sockname")[1]

    async def let_go() -> bool:
        return not await server_holds(server, port)

    # Each look runs `ss`: a few a second are enough.
    await eventually(
        let_go, DROPPED_WITHIN_S, "the server to let go of a connection it gave up on", 0.2
    )


async def test_a_viewer_that_stays_behind_is_closed_and_dropped_if_it_still_does_not_read(
    behind_server: ServerProcess,
) -> None:
    api = Api(behind_server.base_url)
    try:
        room = await api.open_room(await api.user(role="host"))
        viewer = await api.user()
        writer = await silent_viewer(behind_server, viewer.token, room)
        try:
            port = writer.get_extra_info("sockname")[1]
            assert await server_holds(behind_server, port)
            closed = f"closing a slow consumer (user {viewer.user},"
            await fill_queue_of(behind_server, api, room, logged(behind_server, closed), closed)
            assert "behind for" in behind_server.log()
            await until_dropped(behind_server, writer)
        finally:
            writer.close()
    finally:
        await api.aclose()


async def test_a_connection_closed_by_the_keepalive_with_bytes_unsent_is_dropped(
    keepalive_server: ServerProcess,
) -> None:
    api = Api(keepalive_server.base_url)
    try:
        room = await api.open_room(await api.user(role="host"))
        viewer = await api.user()
        writer = await silent_viewer(keepalive_server, viewer.token, room)
        try:
            # Its queue full, the keepalive's close cannot be flushed to a peer that does not
            # read (nor answer pings): the transport would wait for it for ever.
            full = await dropping_frames(api)
            await fill_queue_of(keepalive_server, api, room, full, "frames dropped")
            await until_dropped(keepalive_server, writer)
        finally:
            writer.close()
    finally:
        await api.aclose()
