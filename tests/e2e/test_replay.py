"""Resuming a room with `join {since: {epoch, offset}}`: every missed event once, in order."""

import asyncio
import itertools
from collections.abc import Callable

from giftstream.store import keys
from giftstream.store.connection import Redis, read_hash
from giftstream_client import Ack
from giftstream_client import Client as UserClient
from support import (
    Api,
    Client,
    Frame,
    ServerProcess,
    connected,
    eventually,
    on_both_stores,
    raw_connected,
    room_history,
)

server = on_both_stores()

RECV_S = 15.0
# Not streakable: no streak-end frames, whose copies of a tap would blur the offset order.
GIFT = "confetti"
GIFT_COINS = 100


async def join(ws: Client, room: str, since: Frame | None = None) -> Frame:
    """Join; the `joined` frame must be the answer's first frame."""
    frame: Frame = {"t": "join", "room": room}
    if since is not None:
        frame["since"] = since
    await ws.send(frame)
    joined = await ws.recv(RECV_S)
    assert joined["t"] == "joined", joined
    return joined


async def until(ws: Client, match: Callable[[Frame], bool]) -> tuple[Frame, list[Frame]]:
    """The first frame matching, and every frame received before it."""
    return await ws.recv_until(match, RECV_S)


async def room_field(redis: Redis, room: str, name: str) -> str:
    value = (await read_hash(redis, keys.room(room))).get(name.encode())
    assert value is not None
    return value.decode()


def events(frames: list[Frame]) -> list[tuple[str, int, str]]:
    """(type, offset, event) of the room events among `frames`."""
    return [(f["t"], f["offset"], f["event"]) for f in frames if f["t"] in ("gift", "credit")]


def assert_strictly_increasing(offsets: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(offsets)), offsets


async def test_host_rejoining_with_since_gets_each_missed_credit_once_in_order_then_live_ones(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=5_000_000)
    room = await api.open_room(host)
    acked: list[Ack] = []
    stop = asyncio.Event()

    async def keep_gifting(ws: UserClient) -> None:
        n = 0
        while not stop.is_set() and n < 5_000:
            acked.append(await ws.send_gift(room, GIFT, id=f"keep-{n}"))
            n += 1
            # A steady pace, not a flood: the host's connection is not read while it is away.
            await asyncio.sleep(0.005)

    async with connected(server, viewer, receive_events=False) as viewer_ws:
        await viewer_ws.join(room)
        sender: asyncio.Task[None] | None = None
        try:
            async with raw_connected(server, host) as first:
                epoch = (await join(first, room))["epoch"]
                sender = asyncio.create_task(keep_gifting(viewer_ws))
                for _ in range(3):
                    await until(first, lambda f: f["t"] == "credit")
                # Leave right after a gift frame: its credit is the first thing missed.
                last_seen, _ = await until(first, lambda f: f["t"] == "gift")
            since = last_seen["offset"]
            gone_at = len(acked)
            await eventually(lambda: len(acked) >= gone_at + 5)

            async with raw_connected(server, host) as second:
                rejoined = await join(second, room, {"epoch": epoch, "offset": since})
                back_at = len(acked)
                await eventually(lambda: len(acked) >= back_at + 5)
                stop.set()
                await sender
                final, received = await until(
                    second, lambda f: f["t"] == "credit" and f["event"] == acked[-1].event
                )
                received.append(final)
                # One more live gift: nothing may come between the last credit and it.
                extra = await viewer_ws.send_gift(room, GIFT, id="after-stop")
                extra_credit, between = await until(
                    second, lambda f: f["t"] == "credit" and f["event"] == extra.event
                )
        finally:
            stop.set()
            if sender is not None:
                await sender

    assert rejoined["epoch"] == epoch
    assert rejoined["offset"] >= since
    history = [f for f in await room_history(redis, room) if f["offset"] > since]
    missed_and_live = [(f["offset"], f["event"]) for f in history if f["t"] == "credit"]
    got = [(f["offset"], f["event"]) for f in [*received, extra_credit] if f["t"] == "credit"]
    assert got[0] == (since + 1, last_seen["event"])
    assert got == missed_and_live
    assert {a.event for a in acked[gone_at:]} <= {event for _, event in got}
    assert_strictly_increasing([offset for _, offset, _ in events(received)])
    assert events(between) == [("gift", extra_credit["offset"] - 1, extra.event)]


async def test_viewer_rejoining_with_since_gets_the_missed_gifts_and_no_credit(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    sender = await api.user(coins=10_000)
    watcher = await api.user()
    room = await api.open_room(host)
    async with connected(server, sender, receive_events=False) as sender_ws:
        await sender_ws.join(room)
        async with raw_connected(server, watcher) as first:
            epoch = (await join(first, room))["epoch"]
            seen = [await sender_ws.send_gift(room, GIFT, id=f"seen-{n}") for n in range(2)]
            last_seen, _ = await until(
                first, lambda f: f["t"] == "gift" and f["event"] == seen[-1].event
            )
        missed = [await sender_ws.send_gift(room, GIFT, id=f"missed-{n}") for n in range(3)]

        async with raw_connected(server, watcher) as second:
            await join(second, room, {"epoch": epoch, "offset": last_seen["offset"]})
            live = await sender_ws.send_gift(room, GIFT, id="live")
            last, received = await until(
                second, lambda f: f["t"] == "gift" and f["event"] == live.event
            )
            received.append(last)

    assert [f["t"] for f in received if f["t"] in ("gift", "credit")] == ["gift"] * 4
    assert [f["event"] for f in received if f["t"] == "gift"] == [a.event for a in [*missed, live]]
    assert_strictly_increasing([f["offset"] for f in received if f["t"] == "gift"])
    assert received[0]["offset"] > last_seen["offset"]


async def test_since_with_a_wrong_epoch_replays_the_whole_room_history(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    sender = await api.user(coins=10_000)
    watcher = await api.user()
    room = await api.open_room(host)
    async with connected(server, sender, receive_events=False) as sender_ws:
        await sender_ws.join(room)
        sent = [await sender_ws.send_gift(room, GIFT, id=f"old-{n}") for n in range(3)]
        epoch = await room_field(redis, room, "epoch")
        latest = int(await room_field(redis, room, "offset"))
        # With the right epoch this `since` would replay nothing at all.
        stale = {"epoch": "x" + epoch, "offset": latest}
        async with (
            raw_connected(server, host) as host_ws,
            raw_connected(server, watcher) as watch_ws,
        ):
            joined = await join(host_ws, room, stale)
            await join(watch_ws, room, stale)
            live = await sender_ws.send_gift(room, GIFT, id="new")
            _, host_got = await until(
                host_ws, lambda f: f["t"] == "credit" and f["event"] == live.event
            )
            _, watcher_got = await until(
                watch_ws, lambda f: f["t"] == "gift" and f["event"] == live.event
            )

    assert joined["epoch"] == epoch
    assert latest == 6
    expected = [
        (kind, 2 * n + (1 if kind == "gift" else 2), ack.event)
        for n, ack in enumerate(sent)
        for kind in ("gift", "credit")
    ]
    assert events(host_got) == [*expected, ("gift", 7, live.event)]
    assert events(watcher_got) == [e for e in expected if e[0] == "gift"]


async def test_joined_offset_is_the_rooms_latest_offset(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    sender = await api.user(coins=10_000)
    room = await api.open_room(host)
    async with (
        raw_connected(server, host) as host_ws,
        connected(server, sender, receive_events=False) as sender_ws,
    ):
        empty = await join(host_ws, room)
        await sender_ws.join(room)
        acks = [await sender_ws.send_gift(room, GIFT, id=f"g-{n}") for n in range(3)]
        last_credit, _ = await until(
            host_ws, lambda f: f["t"] == "credit" and f["event"] == acks[-1].event
        )
        async with raw_connected(server, sender) as late_ws:
            late = await join(late_ws, room)
        async with raw_connected(server, host) as resumed_ws:
            resumed = await join(resumed_ws, room, {"epoch": empty["epoch"], "offset": 2})

    assert empty["offset"] == 0
    assert late["offset"] == last_credit["offset"] == 6
    assert late["offset"] == int(await room_field(redis, room, "offset"))
    # `joined` names the latest offset even when the client resumes from an older one.
    assert resumed["offset"] == 6
    assert late["epoch"] == empty["epoch"] == await room_field(redis, room, "epoch")


async def test_since_at_the_latest_offset_replays_nothing(server: ServerProcess, api: Api) -> None:
    host = await api.user(role="host")
    sender = await api.user(coins=10_000)
    room = await api.open_room(host)
    async with connected(server, sender, receive_events=False) as sender_ws:
        await sender_ws.join(room)
        for n in range(2):
            await sender_ws.send_gift(room, GIFT, id=f"before-{n}")
        async with raw_connected(server, host) as host_ws:
            joined = await join(host_ws, room)
        async with raw_connected(server, host) as host_ws:
            again = await join(
                host_ws, room, {"epoch": joined["epoch"], "offset": joined["offset"]}
            )
            live = await sender_ws.send_gift(room, GIFT, id="live")
            _, before = await until(
                host_ws, lambda f: f["t"] == "credit" and f["event"] == live.event
            )

    assert again["offset"] == joined["offset"] == 4
    assert events(before) == [("gift", 5, live.event)]
