"""Cut connections (through a proxy, as a network failure would) and what the client makes of
them: events resumed exactly once and in order, gifts charged once, epoch changes reported."""

import asyncio
from typing import Any

import msgpack
import pytest

from giftstream.store import keys
from giftstream.store.connection import Redis
from giftstream_client import (
    Ack,
    Client,
    CreditEvent,
    EpochChanged,
    Event,
    GiftEvent,
    RoomState,
    StreakEnded,
)
from support import Api, ServerProcess, bearer, eventually, history_positions, room_history
from support.client_harness import (
    GIFT,
    GIFT_COINS,
    QUICK,
    WAIT_S,
    grown,
    positions,
)
from support.proxy import Proxy

CUTS = 3
# Taps of one streakable gift, then another gift, which ends the streak (no waiting for the
# streak timeout): a storm of streaks.
STREAK_PATTERN = ("rose", "rose", "rose", "finger_heart", "finger_heart", "confetti")


async def test_a_host_cut_off_mid_stream_resumes_with_every_event_once_and_in_order(
    server: ServerProcess, api: Api, redis: Redis, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1_000_000)
    room = await api.open_room(host)
    received: list[Event] = []
    acks: list[Ack] = []
    stop = asyncio.Event()

    async def collect(client: Client) -> None:
        async for event in client.events():
            received.append(event)

    async def keep_gifting(client: Client) -> None:
        while not stop.is_set():
            acks.append(await client.send_gift(room, GIFT))

    async with (
        Client(proxy.url, host.token, backoff=QUICK) as host_client,
        Client(server.ws_url, viewer.token, receive_events=False) as gifter,
    ):
        await host_client.join(room)
        await gifter.join(room)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(collect(host_client))
            sender = tasks.create_task(keep_gifting(gifter))
            for _ in range(CUTS):
                await grown(received, by=4)
                # Offline until gifts were made that the host can only get by resuming.
                async with proxy.offline():
                    await grown(acks, by=3)
            await grown(acks, by=3)
            stop.set()
            await sender
            await eventually(lambda: sum(isinstance(e, CreditEvent) for e in received) == len(acks))
            await host_client.close()  # ends the collector's iteration
        assert gifter.buffered_events == 0

    assert proxy.accepted == CUTS + 1
    assert all(isinstance(e, GiftEvent | CreditEvent) for e in received)
    assert positions(received) == history_positions(await room_history(redis, room))
    assert [e.event for e in received if isinstance(e, CreditEvent)] == [a.event for a in acks]


@pytest.mark.parametrize("id_given", [True, False], ids=["id-given", "id-picked"])
async def test_a_gift_whose_ack_is_lost_to_a_disconnect_is_resent_and_charged_once(
    api: Api, redis: Redis, proxy: Proxy, id_given: bool
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1_000)
    room = await api.open_room(host)
    async with Client(proxy.url, viewer.token, backoff=QUICK, receive_events=False) as client:
        await client.join(room)
        gift_id = "lost-ack-1" if id_given else None
        # The ack carries the gift id, or failing a known id, the type "ack".
        cut = proxy.cut_when_server_sends(msgpack.packb(gift_id or "ack"))

        ack = await client.send_gift(room, GIFT, id=gift_id)

        assert cut.is_set()
        assert proxy.accepted == 2
    if gift_id is not None:
        assert ack.id == gift_id
    assert ack.coins == 1_000 - GIFT_COINS
    assert (await api.wallet(viewer))["coins"] == 1_000 - GIFT_COINS
    history = await room_history(redis, room)
    assert [(f["t"], f["event"]) for f in history] == [("gift", ack.event), ("credit", ack.event)]


async def test_a_reset_history_is_reported_as_epoch_changed_then_replayed_from_its_start(
    server: ServerProcess, api: Api, redis: Redis, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1_000)
    room = await api.open_room(host)
    async with (
        Client(proxy.url, host.token, backoff=QUICK) as host_client,
        Client(server.ws_url, viewer.token, receive_events=False) as gifter,
    ):
        joined = await host_client.join(room)
        await gifter.join(room)
        for _ in range(2):
            await gifter.send_gift(room, GIFT)
        events = host_client.events()
        async with asyncio.timeout(WAIT_S):
            before = [await anext(events) for _ in range(4)]

            await redis.hset(keys.room(room), "epoch", "reset-1")
            proxy.cut_all()

            changed = await anext(events)
            replayed = [await anext(events) for _ in range(4)]
            ack = await gifter.send_gift(room, GIFT)
            live = await anext(events)

    assert changed == EpochChanged(room=room, old_epoch=joined.epoch, new_epoch="reset-1")
    assert replayed == before
    assert isinstance(live, GiftEvent) and (live.event, live.offset) == (ack.event, 5)
    assert proxy.accepted == 2


async def test_a_reader_slower_than_its_room_holds_up_no_ack_and_misses_no_event(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=10_000)
    room = await api.open_room(host)
    async with Client(server.ws_url, viewer.token, max_buffered_events=4) as client:
        await client.join(room)
        acks = [await client.send_gift(room, GIFT) for _ in range(10)]
        # A gift event each: four fit, six are left for later.
        await eventually(lambda: client.overflowed_events == 6)
        assert client.buffered_events == 4

        acks.append(await client.send_gift(room, GIFT))  # not stuck behind a full buffer

        received: list[Event] = []
        events = client.events()
        async with asyncio.timeout(WAIT_S):
            while len(received) < len(acks):
                received.append(await anext(events))
        assert client.buffered_events == 0

    history = [f for f in await room_history(redis, room) if f["t"] == "gift"]
    assert positions(received) == history_positions(history)
    assert [e.event for e in received if isinstance(e, GiftEvent)] == [a.event for a in acks]


async def test_a_room_that_ended_while_the_client_was_away_is_reported_after_the_reconnect(
    api: Api, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewer = await api.user()
    room = await api.open_room(host)
    async with Client(proxy.url, viewer.token, backoff=QUICK) as client:
        await client.join(room)
        events = client.events()
        async with proxy.offline():
            ended = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(host))
            assert ended.status_code == 200

        async with asyncio.timeout(WAIT_S):
            state = await anext(events)

    assert state == RoomState(room=room, live=False)
    assert proxy.accepted == 2


async def accepted(proxy: Proxy, connections: int) -> None:
    """Wait until the proxy has forwarded `connections` connections."""
    await eventually(lambda: proxy.accepted >= connections)


def assert_once_in_offset_order(
    received: list[Event], history: list[dict[str, Any]], kinds: set[str]
) -> None:
    """Gift and credit events strictly in offset order, each one of the history's, no event id
    twice per kind; every streak ended at most once, after an event at or past its last tap."""
    taken = positions(received)
    assert [offset for _, offset, _ in taken] == sorted({offset for _, offset, _ in taken})
    assert set(taken) <= set(history_positions(history))
    for kind in kinds:
        ids = [event for t, _, event in taken if t == kind]
        assert len(ids) == len(set(ids)), kind
    ended: set[str] = set()
    position = 0
    for event in received:
        if isinstance(event, GiftEvent | CreditEvent):
            position = event.offset
        elif isinstance(event, StreakEnded):
            assert event.streak not in ended, event
            assert event.offset <= position, event
            ended.add(event.streak)


async def test_a_storm_of_streaks_through_cuts_yields_every_gift_once_in_offset_order(
    server: ServerProcess, api: Api, redis: Redis, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewers = [await api.user(coins=1_000_000) for _ in range(3)]
    room = await api.open_room(host)
    for_host: list[Event] = []
    for_sender: list[Event] = []
    acks: list[Ack] = []
    stop = asyncio.Event()

    async def collect(client: Client, into: list[Event]) -> None:
        async for event in client.events():
            into.append(event)

    async def keep_gifting(client: Client) -> None:
        n = 0
        while not stop.is_set():
            acks.append(await client.send_gift(room, STREAK_PATTERN[n % len(STREAK_PATTERN)]))
            n += 1

    async with (
        Client(proxy.url, host.token, backoff=QUICK) as host_client,
        # The first viewer watches its own gifts, through the same cuts.
        Client(proxy.url, viewers[0].token, backoff=QUICK) as watching_sender,
        Client(server.ws_url, viewers[1].token, receive_events=False) as second,
        Client(server.ws_url, viewers[2].token, receive_events=False) as third,
    ):
        gifters = [watching_sender, second, third]
        await host_client.join(room)
        for gifter in gifters:
            await gifter.join(room)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(collect(host_client, for_host))
            tasks.create_task(collect(watching_sender, for_sender))
            senders = [tasks.create_task(keep_gifting(g)) for g in gifters]
            for cut in range(CUTS):
                # Both readers are back (from the cut before) and the storm goes on.
                await accepted(proxy, 2 * (cut + 1))
                await grown(acks, by=30)
                async with proxy.offline():
                    await grown(acks, by=15)
            await accepted(proxy, 2 * (CUTS + 1))
            await grown(acks, by=30)
            stop.set()
            await asyncio.gather(*senders)
            await eventually(lambda: sum(isinstance(e, CreditEvent) for e in for_host) == len(acks))
            await eventually(lambda: any(isinstance(e, StreakEnded) for e in for_sender))
            await host_client.close()
            await watching_sender.close()

    assert proxy.accepted >= 2 * (CUTS + 1)
    history = await room_history(redis, room)
    assert_once_in_offset_order(for_host, history, {"gift", "credit"})
    assert_once_in_offset_order(for_sender, history, {"gift"})
    # Credits are lossless: the host has every one, in the history's order.
    credits = [p for p in history_positions(history) if p[0] == "credit"]
    assert [p for p in positions(for_host) if p[0] == "credit"] == credits
    assert any(isinstance(e, StreakEnded) for e in for_host)
