"""Faults during gifting: clients that never read, while the others in the room keep pace.

The gifting clients and the checks of the books are in support/storm.py. Each test writes its
figures to a JSON file in its tmp dir and prints one line (`pytest -s`).
"""

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from giftstream.store.embedded import EmbeddedValkey
from giftstream.wire.codec import MSGPACK_SUBPROTOCOL
from support import BIG_NAME, Api, Client, Frame, ServerProcess, User, metric, settles
from support.storm import (
    FRAMES_DROPPED,
    SEED,
    SLOW_CONSUMER_CLOSES,
    STORM_ENV,
    STORM_S,
    Gifter,
    Reader,
    Storm,
    joined_client,
    record,
    scene,
)

# -- (d) clients that never read -------------------------------------------------------------

# A quarter of the default: a client that does not read fills it soon, while it still holds
# the frames of one tick for a member that reads, with room to spare on a loaded machine (the
# frames of a tick go onto the queue at once; a queue that cannot take a tick's credits cuts
# even a host that reads).
SEND_QUEUE_BYTES = 262_144
# What the room sends to a member before the tests call a non-reading client's queue surely
# full: its socket buffers (kept small: see never_reading) hold about 150 KB, the server's
# transport buffer 64 KB, the queue 256 KB.
FILL_BYTES = 1_200_000
# The same for the viewers that never read, with more to spare: the kernel's buffers for a
# socket that does not read vary from run to run, and a viewer's frames are written a tick at
# a time, so a storm short of this can end before its queue is full.
VIEWER_FILL_BYTES = 4_000_000
AFTER_CUT_GIFTS = 300
# Gifts in flight per gifter: a steady room, whose frames of one tick (50 ms) are far fewer
# bytes than a queue. A queue then fills by accumulating while its client does not read, not
# by one burst.
SLOW_WINDOW = 2
# A member that reads gets each credit within this long of its ack.
LAG_BOUND_S = 2.0


@pytest.fixture(scope="module")
def queue_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = {**STORM_ENV, "GIFTSTREAM_SEND_QUEUE_BYTES": str(SEND_QUEUE_BYTES)}
    server = ServerProcess(valkey.url, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def never_reading(server: ServerProcess, user: User, room: str, extras: bool) -> Client:
    """A client that joins the room and then never reads. Its socket advertises a small
    window and segment size, so that the kernel holds little for it (a phone on a bad
    network): the server's queue for it fills after a few hundred KB, not many MB."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    ws = await ws_connect(
        server.ws_url,
        sock=sock,
        subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
        max_queue=1,
        ping_interval=None,
    )
    client = Client(ws, json_mode=False)
    await client.auth(user, extras=extras)
    await client.join(room)
    return client


async def drain(client: Client, within_s: float = 30.0) -> tuple[list[Frame], int | None]:
    """Read what a client has waiting: its frames, and the close code if the server closed it
    (None: still open, answering a ping)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + within_s
    try:
        await client.send({"t": "ping", "id": "drain"})
        while True:
            frame = await client.recv_frame(max(deadline - time.monotonic(), 0.001))
            for f in frame["frames"] if frame["t"] == "batch" else [frame]:
                frames.append(f)
                if f["t"] == "pong" and f.get("id") == "drain":
                    return frames, None
    except ConnectionClosed as e:
        return frames, e.rcvd.code if e.rcvd is not None else 1006


@dataclass
class Pace:
    """How the members that read fared while others did not read."""

    gifts: int
    missing_credits: int
    missing_gifts: int
    duplicate_credits: int
    duplicate_gifts: int
    worst_lag_s: float


async def pace_of_the_room(storm: Storm, reader: Reader, watcher: Reader) -> Pace:
    """Whether the reading host got every credit and the reading viewer every gift, once, and
    how long after its ack the slowest credit came."""
    acks = storm.acks()
    await settles(lambda: set(acks) <= set(reader.credits) and set(acks) <= set(watcher.gifts), 10)
    lags = [reader.credits[e] - a.at for e, a in acks.items() if e in reader.credits]
    return Pace(
        gifts=len(acks),
        missing_credits=len(set(acks) - set(reader.credits)),
        missing_gifts=len(set(acks) - set(watcher.gifts)),
        duplicate_credits=len(reader.duplicates),
        duplicate_gifts=sum(n - 1 for n in watcher.gifts.values()),
        worst_lag_s=max(lags, default=0.0),
    )


def assert_the_room_kept_pace(pace: Pace) -> None:
    assert pace.gifts > 0
    assert (pace.missing_credits, pace.missing_gifts) == (0, 0), pace
    assert (pace.duplicate_credits, pace.duplicate_gifts) == (0, 0), pace
    assert pace.worst_lag_s < LAG_BOUND_S, pace


@dataclass
class SlowHostRun:
    storm: Storm
    cut_during_storm: bool
    bytes_before_cut: int
    pace: Pace
    reader_open: bool
    close_code: int | None
    frames_read_on_drain: int


def slow_consumer_closes_of(server: ServerProcess, user: User) -> int:
    """How many connections of `user` the server has logged closing as slow consumers."""
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace")
    return text.count(f"closing a slow consumer (user {user.user},")


async def still_open(reader: Reader) -> bool:
    """Whether a reading member's connection still answers."""
    with contextlib.suppress(ConnectionClosed):
        await reader.client.send({"t": "ping", "id": "open?"})
    return await settles(lambda: any(f.get("id") == "open?" for f in reader.frames), 10)


@pytest.fixture(scope="module")
async def slow_host_run(queue_server: ServerProcess) -> SlowHostRun:
    """A busy room whose host has a second connection that never reads."""
    api = Api(queue_server.base_url)
    try:
        host, room, viewers = await scene(api, 4, BIG_NAME)
        reader = Reader(await joined_client(queue_server, host, room))
        watcher = Reader(await joined_client(queue_server, await api.user(), room))
        slow = await never_reading(queue_server, host, room, extras=False)
        # The host's connections are the reader and the one that never reads: a cut of the
        # host's that leaves the reader open is the other one's.
        closes_before = slow_consumer_closes_of(queue_server, host)
        cut: list[int] = []  # reader's bytes when the server cut the slow client
        gifters = [Gifter(v, f"h{i}", 100_000) for i, v in enumerate(viewers)]
        acked_at_cut: list[int] = []

        def enough() -> bool:
            if cut:
                return storm.acked >= acked_at_cut[0] + AFTER_CUT_GIFTS
            return reader.bytes >= FILL_BYTES

        storm = Storm(queue_server.ws_url, room, gifters, random.Random(SEED), SLOW_WINDOW, enough)

        async def watch_for_the_cut() -> None:
            while not cut:
                closes = await asyncio.to_thread(slow_consumer_closes_of, queue_server, host)
                if closes > closes_before:
                    cut.append(reader.bytes)
                    acked_at_cut.append(storm.acked)
                await asyncio.sleep(0.1)

        watching = asyncio.create_task(watch_for_the_cut())
        try:
            await asyncio.wait_for(storm.run(), STORM_S)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        pace = await pace_of_the_room(storm, reader, watcher)
        reader_open = await still_open(reader)
        frames, code = await drain(slow)
        await slow.close()
        await reader.close()
        await watcher.close()
        return SlowHostRun(
            storm, bool(cut), cut[0] if cut else -1, pace, reader_open, code, len(frames)
        )
    finally:
        await api.aclose()


async def test_a_host_connection_that_never_reads_is_cut_off_once_its_queue_is_full(
    slow_host_run: SlowHostRun, tmp_path: Path
) -> None:
    run = slow_host_run
    record(
        tmp_path,
        "slow-host",
        {
            "send_queue_bytes": SEND_QUEUE_BYTES,
            "gifts_acked": run.storm.acked,
            "cut_during_storm": run.cut_during_storm,
            "room_bytes_before_cut": run.bytes_before_cut,
            "close_code": run.close_code,
            "frames_read_on_drain": run.frames_read_on_drain,
            "worst_credit_lag_s": round(run.pace.worst_lag_s, 3),
        },
    )
    assert run.reader_open, "the host's reading connection was cut: the test cannot tell"
    assert run.cut_during_storm, (
        f"{FILL_BYTES} bytes of lossless frames sent to a connection that never reads, and no"
        f" slow-consumer close while it did not read (close seen only on reading: {run.close_code})"
    )
    # 1008 when the close frame reaches the client; a client that never reads cannot read it,
    # and sees the connection dropped (1006) once the server's close handshake times out.
    assert run.close_code in (1008, 1006)


async def test_while_a_host_connection_never_reads_the_others_get_every_frame_in_time(
    slow_host_run: SlowHostRun,
) -> None:
    assert slow_host_run.reader_open
    assert_the_room_kept_pace(slow_host_run.pace)


@dataclass
class SlowViewerRun:
    storm: Storm
    dropped: float
    slow_closes: float
    outcomes: dict[bool, tuple[int, int | None]]  # extras -> (gift frames read, close code)
    pace: Pace
    reader_open: bool


@pytest.fixture(scope="module")
async def slow_viewers_run(queue_server: ServerProcess) -> SlowViewerRun:
    """A busy room with two viewers that never read: one plain, one with `extras`."""
    api = Api(queue_server.base_url)
    try:
        host, room, viewers = await scene(api, 4, BIG_NAME)
        reader = Reader(await joined_client(queue_server, host, room))
        watcher = Reader(await joined_client(queue_server, await api.user(), room))
        slow = {
            extras: await never_reading(queue_server, await api.user(), room, extras)
            for extras in (False, True)
        }
        dropped_before = await metric(api, FRAMES_DROPPED)
        closes_before = await metric(api, SLOW_CONSUMER_CLOSES)
        gifters = [Gifter(v, f"v{i}", 100_000) for i, v in enumerate(viewers)]
        storm = Storm(
            queue_server.ws_url,
            room,
            gifters,
            random.Random(SEED),
            SLOW_WINDOW,
            lambda: watcher.bytes >= VIEWER_FILL_BYTES,
        )
        await asyncio.wait_for(storm.run(), STORM_S)
        pace = await pace_of_the_room(storm, reader, watcher)
        reader_open = await still_open(reader)
        dropped = await metric(api, FRAMES_DROPPED) - dropped_before
        slow_closes = await metric(api, SLOW_CONSUMER_CLOSES) - closes_before
        outcomes = {}
        for extras, client in slow.items():
            frames, code = await drain(client)
            outcomes[extras] = (sum(f["t"] == "gift" for f in frames), code)
            await client.close()
        await reader.close()
        await watcher.close()
        return SlowViewerRun(storm, dropped, slow_closes, outcomes, pace, reader_open)
    finally:
        await api.aclose()


@pytest.mark.parametrize("extras", [False, True], ids=["v1", "extras"])
async def test_a_viewer_that_never_reads_loses_only_animations_and_stays_connected(
    slow_viewers_run: SlowViewerRun, extras: bool, tmp_path: Path
) -> None:
    run = slow_viewers_run
    gifts_read, code = run.outcomes[extras]
    record(
        tmp_path,
        f"slow-viewer-{'extras' if extras else 'v1'}",
        {
            "send_queue_bytes": SEND_QUEUE_BYTES,
            "gifts_acked": run.storm.acked,
            "gift_frames_read": gifts_read,
            "frames_dropped": int(run.dropped),
            "slow_consumer_closes": int(run.slow_closes),
            "close_code": code,
            "worst_credit_lag_s": round(run.pace.worst_lag_s, 3),
        },
    )
    # Its queue filled: animations were dropped for it...
    assert gifts_read < run.storm.acked
    assert run.dropped > 0
    # ...and it was not cut off: gift frames are lossy, never a reason to close.
    assert code is None, f"closed with {code}"


async def test_while_viewers_never_read_the_others_get_every_frame_in_time(
    slow_viewers_run: SlowViewerRun,
) -> None:
    assert slow_viewers_run.reader_open
    assert_the_room_kept_pace(slow_viewers_run.pace)
