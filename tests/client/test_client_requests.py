"""The client's requests against the real server: typed answers, typed events, typed errors."""

import asyncio

import pytest

from giftstream.errors import ErrorCode
from giftstream_client import (
    Ack,
    Backoff,
    Client,
    CreditEvent,
    GiftEvent,
    InsufficientCoins,
    NotFound,
    NotInRoom,
    Streak,
    StreakEnded,
    Unauthenticated,
)
from support import Api, ServerProcess, eventually
from support.client_harness import GIFT, GIFT_COINS, QUICK, WAIT_S
from support.proxy import Proxy


@pytest.mark.parametrize("json_mode", [False, True], ids=["msgpack", "json"])
async def test_a_gift_is_acked_and_reaches_the_host_as_typed_gift_credit_and_streak_end_events(
    server: ServerProcess, api: Api, json_mode: bool
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=100)
    room = await api.open_room(host)
    async with (
        Client(server.ws_url, host.token, json=json_mode) as host_client,
        Client(server.ws_url, viewer.token, json=json_mode, receive_events=False) as gifter,
    ):
        assert (gifter.welcome.user, gifter.welcome.coins) == (viewer.user, 100)
        joined = await host_client.join(room)
        assert (joined.room, joined.host, joined.live) == (room, host.user, True)
        await gifter.join(room)

        ack = await gifter.send_gift(room, "finger_heart", count=2, id="typed-1")

        assert ack == Ack(id="typed-1", event=ack.event, coins=90)
        events = host_client.events()
        async with asyncio.timeout(WAIT_S):
            gift, credit, streak_end = [await anext(events) for _ in range(3)]
        assert isinstance(gift, GiftEvent) and isinstance(credit, CreditEvent)
        assert gift == GiftEvent(
            room=room,
            event=ack.event,
            offset=gift.offset,
            sender=viewer.user,
            host=host.user,
            gift="finger_heart",
            count=2,
            coins=10,
            streak=Streak(id=ack.event, repeat=2, end=False),
            sender_name="t-viewer",
            gift_name="Finger Heart",
            diamonds=10,
            ts=gift.ts,
        )
        assert credit == CreditEvent(
            room=room,
            event=ack.event,
            offset=gift.offset + 1,
            sender=viewer.user,
            gift="finger_heart",
            count=2,
            diamonds=10,
            total=10,
            sender_name="t-viewer",
            gift_name="Finger Heart",
            coins=10,
            ts=credit.ts,
        )
        # The closing frame is not a second gift: it names the streak and its last tap.
        assert streak_end == StreakEnded(
            room=room,
            streak=ack.event,
            repeat=2,
            event=ack.event,
            offset=gift.offset,
            sender=viewer.user,
            gift="finger_heart",
            sender_name="t-viewer",
            gift_name="Finger Heart",
        )


async def test_refused_requests_raise_the_exception_of_their_protocol_error_code(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=50)
    room = await api.open_room(host)
    async with Client(server.ws_url, viewer.token, receive_events=False) as client:
        with pytest.raises(NotFound) as no_room:
            await client.join("no-such-room")
        assert no_room.value.code == ErrorCode.NOT_FOUND
        await client.join(room)

        with pytest.raises(InsufficientCoins) as poor:
            await client.send_gift(room, GIFT, id="too-dear-1")
        assert (poor.value.code, poor.value.request_id) == ("insufficient_coins", "too-dear-1")
        with pytest.raises(ValueError, match="1 to 64 printable"):
            await client.send_gift(room, GIFT, id="x" * 65)
        with pytest.raises(NotFound) as unknown:
            await client.send_gift(room, "no-such-gift")
        assert unknown.value.code == ErrorCode.UNKNOWN_GIFT

        await client.leave(room)
        with pytest.raises(NotInRoom):
            await client.leave(room)
        with pytest.raises(NotInRoom) as outside:
            await client.send_gift(room, "rose")
        assert outside.value.code == ErrorCode.NOT_IN_ROOM
    assert (await api.wallet(viewer))["coins"] == 50


async def test_a_refused_token_raises_unauthenticated_at_once_without_retrying(
    proxy: Proxy,
) -> None:
    client = Client(proxy.url, "v1.not-a.token", backoff=Backoff(max_attempts=5))
    try:
        with pytest.raises(Unauthenticated) as refused:
            await client.connect()
        assert refused.value.code == ErrorCode.UNAUTHENTICATED
        assert proxy.accepted == 1
    finally:
        await client.close()


async def test_a_join_refused_while_reconnecting_fails_only_that_call_not_the_client(
    api: Api, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1_000)
    room = await api.open_room(host)
    async with Client(proxy.url, viewer.token, backoff=QUICK, receive_events=False) as client:
        await client.join(room)
        async with proxy.offline():
            bad_join = asyncio.create_task(client.join("no-such-room"))
            # The client is reconnecting, with the join waiting for it.
            await eventually(lambda: proxy.refused >= 1)
        with pytest.raises(NotFound):
            await bad_join

        ack = await client.send_gift(room, GIFT)

    assert ack.coins == 1_000 - GIFT_COINS
    assert proxy.accepted == 2


async def test_an_events_iterator_whose_wait_timed_out_goes_on_yielding(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1_000)
    room = await api.open_room(host)
    async with Client(server.ws_url, viewer.token) as client:
        await client.join(room)
        events = client.events()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await anext(events)

        ack = await client.send_gift(room, GIFT)

        async with asyncio.timeout(WAIT_S):
            event = await anext(events)
        assert isinstance(event, GiftEvent) and event.event == ack.event
