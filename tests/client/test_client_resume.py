"""Cut connections (through a proxy, as a network failure would) and what the client makes of
them: events resumed exactly once and in order, gifts charged once, epoch changes reported."""

import asyncio

import msgpack
import pytest

from giftstream.client import (
    Ack,
    Client,
    CreditEvent,
    EpochChanged,
    Event,
    GiftEvent,
    RoomState,
)
from giftstream.store import keys
from giftstream.store.connection import Redis
from harness import (
    GIFT,
    GIFT_COINS,
    QUICK,
    WAIT_S,
    eventually,
    grown,
    history_positions,
    positions,
    room_history,
)
from proxy import Proxy
from support import Api, ServerProcess, bearer

CUTS = 3


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
