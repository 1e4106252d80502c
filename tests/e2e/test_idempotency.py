"""A gift `id` is an idempotency key: one charge and one ack per id, whatever the retries."""

import asyncio
import contextlib
from collections import Counter

import pytest

from giftstream.store import keys
from giftstream.store.connection import Redis
from giftstream_client import Ack, NotInRoom, ServerError
from support import (
    Api,
    Client,
    Frame,
    ServerProcess,
    User,
    connected,
    gift_burst,
    on_both_stores,
    raw_connected,
)

server = on_both_stores()

RECV_S = 15.0


async def fence(server: ServerProcess, api: Api, room: str, host_ws: Client) -> list[Frame]:
    """Send one more gift from another viewer; every other frame the host got before its credit.

    Room events reach a member in offset order, so a duplicate credit of an earlier gift
    would be among them."""
    sender = await api.user(coins=1)
    async with connected(server, sender, receive_events=False) as ws:
        await ws.join(room)
        ack = await ws.send_gift(room, "rose", id="fence")
    _, before = await host_ws.recv_until(
        lambda f: f["t"] == "credit" and f["event"] == ack.event, RECV_S
    )
    return [f for f in before if f.get("event") != ack.event]


def credits(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["t"] == "credit"]


async def room_offset(redis: Redis, room: str) -> int:
    return int(await redis.hget(keys.room(room), "offset") or 0)


async def money(api: Api, redis: Redis, viewer: User, host: User, room: str) -> tuple[int, ...]:
    """What must not change when a gift is refused: balances, ledger, room history."""
    return (
        (await api.wallet(viewer))["coins"],
        (await api.wallet(host))["diamonds"],
        await redis.xlen(keys.user_ledger(viewer.user)),
        await room_offset(redis, room),
    )


async def test_resending_a_gift_id_on_the_same_connection_charges_once_and_repeats_the_ack(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1000)
    room = await api.open_room(host)
    async with raw_connected(server, host) as host_ws, raw_connected(server, viewer) as viewer_ws:
        await host_ws.join(room)
        await viewer_ws.join(room)

        first = await viewer_ws.gift(room, "confetti", "idem-1")
        again = await viewer_ws.gift(room, "confetti", "idem-1")
        other = await viewer_ws.gift(room, "finger_heart", "idem-2", count=2)
        # A retry after the balance moved still gets the original answer, coins included.
        late = await viewer_ws.gift(room, "confetti", "idem-1")

        assert first == {"t": "ack", "id": "idem-1", "event": first["event"], "coins": 900}
        assert again == first
        assert late == first
        assert other["t"] == "ack" and other["coins"] == 890
        assert other["event"] != first["event"]
        assert (await api.wallet(viewer))["coins"] == 890
        assert (await api.wallet(host))["diamonds"] == 110
        seen = credits(await fence(server, api, room, host_ws))
        assert [c["event"] for c in seen] == [first["event"], other["event"]]
        assert [c["diamonds"] for c in seen] == [100, 10]


async def test_retry_from_a_new_connection_that_joined_gets_the_original_ack_uncharged(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=500)
    room = await api.open_room(host)
    async with raw_connected(server, host) as host_ws:
        await host_ws.join(room)
        async with connected(server, viewer, receive_events=False) as viewer_ws:
            await viewer_ws.join(room)
            first = await viewer_ws.send_gift(room, "hand_hearts", count=2, id="reconnect-1")
        assert first.coins == 300

        async with connected(server, viewer, receive_events=False) as again_ws:
            await again_ws.join(room)
            retried = await again_ws.send_gift(room, "hand_hearts", count=2, id="reconnect-1")

        assert retried == first
        assert (await api.wallet(viewer))["coins"] == 300
        assert (await api.wallet(host))["diamonds"] == 200
        seen = credits(await fence(server, api, room, host_ws))
        assert [c["event"] for c in seen] == [first.event]


async def test_retry_from_a_connection_not_in_the_room_gets_the_original_ack_uncharged(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=500)
    room = await api.open_room(host)
    async with raw_connected(server, host) as host_ws:
        await host_ws.join(room)
        async with connected(server, viewer, receive_events=False) as viewer_ws:
            await viewer_ws.join(room)
            first = await viewer_ws.send_gift(room, "corgi", id="outside-1")
        assert first.coins == 201

        async with connected(server, viewer, receive_events=False) as outside_ws:
            retried = await outside_ws.send_gift(room, "corgi", id="outside-1")
            # The same connection is still refused a gift it never sent.
            with pytest.raises(NotInRoom) as fresh:
                await outside_ws.send_gift(room, "corgi", id="outside-2")

        assert retried == first
        assert (fresh.value.code, fresh.value.request_id) == ("not_in_room", "outside-2")
        assert (await api.wallet(viewer))["coins"] == 201
        assert (await api.wallet(host))["diamonds"] == 299
        seen = credits(await fence(server, api, room, host_ws))
        assert [c["event"] for c in seen] == [first.event]


async def test_the_same_id_sent_concurrently_on_four_connections_is_charged_once(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1000)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        host_ws = await stack.enter_async_context(raw_connected(server, host))
        await host_ws.join(room)
        conns = [await stack.enter_async_context(raw_connected(server, viewer)) for _ in range(4)]
        for conn in conns:
            await conn.join(room)

        async def five_times(conn: Client) -> list[Frame]:
            for _ in range(5):
                await conn.send_gift(room, "confetti", "race-1")
            return [await conn.answer("race-1", RECV_S) for _ in range(5)]

        answers = [a for batch in await asyncio.gather(*map(five_times, conns)) for a in batch]

        assert len(answers) == 20
        assert all(a == answers[0] for a in answers), answers
        assert answers[0]["t"] == "ack" and answers[0]["coins"] == 900
        assert (await api.wallet(viewer))["coins"] == 900
        assert (await api.wallet(host))["diamonds"] == 100
        seen = credits(await fence(server, api, room, host_ws))
        assert [c["event"] for c in seen] == [answers[0]["event"]]


async def test_the_same_id_with_other_content_is_an_idempotency_conflict_that_changes_nothing(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    other_host = await api.user(role="host")
    viewer = await api.user(coins=1000)
    room = await api.open_room(host)
    other_room = await api.open_room(other_host)
    async with raw_connected(server, host) as host_ws, raw_connected(server, viewer) as viewer_ws:
        await host_ws.join(room)
        await viewer_ws.join(room)
        await viewer_ws.join(other_room)
        first = await viewer_ws.gift(room, "confetti", "conflict-1")
        assert first["t"] == "ack" and first["coins"] == 900
        before = await money(api, redis, viewer, host, room)
        other_before = await money(api, redis, viewer, other_host, other_room)

        refused = [
            await viewer_ws.gift(room, "hand_hearts", "conflict-1"),
            await viewer_ws.gift(room, "confetti", "conflict-1", count=2),
            await viewer_ws.gift(other_room, "confetti", "conflict-1"),
        ]
        async with raw_connected(server, viewer) as outside_ws:
            refused.append(await outside_ws.gift(room, "rose", "conflict-1"))

        for answer in refused:
            assert answer["t"] == "error", answer
            assert (answer["code"], answer["id"]) == ("idempotency_conflict", "conflict-1")
        assert await money(api, redis, viewer, host, room) == before
        assert await money(api, redis, viewer, other_host, other_room) == other_before
        # The original answer is still the answer to the original content.
        assert await viewer_ws.gift(room, "confetti", "conflict-1") == first
        seen = credits(await fence(server, api, room, host_ws))
        assert [c["event"] for c in seen] == [first["event"]]


async def test_insufficient_coins_changes_no_balance_and_adds_no_room_event(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=99)
    room = await api.open_room(host)
    async with raw_connected(server, host) as host_ws, raw_connected(server, viewer) as viewer_ws:
        await host_ws.join(room)
        await viewer_ws.join(room)
        before = await money(api, redis, viewer, host, room)

        refused = await viewer_ws.gift(room, "confetti", "poor-1")
        refused_many = await viewer_ws.gift(room, "finger_heart", "poor-2", count=20)

        for answer, rid in ((refused, "poor-1"), (refused_many, "poor-2")):
            assert answer["t"] == "error", answer
            assert (answer["code"], answer["id"]) == ("insufficient_coins", rid)
        assert before == (99, 0, 1, 0)
        assert await money(api, redis, viewer, host, room) == before
        # The host saw no gift and no credit before the next real gift.
        seen = await fence(server, api, room, host_ws)
        assert [f for f in seen if f["t"] in ("gift", "credit")] == []


async def test_200_concurrent_gifts_over_4_connections_with_50_coins_charge_exactly_50(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=50)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        host_ws = await stack.enter_async_context(raw_connected(server, host))
        await host_ws.join(room)
        # 50 gifts in flight on each of four connections at once.
        answers = await gift_burst(server, viewer, room, 4, 50, "burst")

        assert (await api.wallet(viewer))["coins"] == 0
        assert (await api.wallet(host))["diamonds"] == 50
        received: list[Frame] = []
        while len(received) < 50:
            frame, _ = await host_ws.recv_until(lambda f: f["t"] == "credit", RECV_S)
            received.append(frame)
        assert [c["total"] for c in received] == list(range(1, 51))
        assert credits(await fence(server, api, room, host_ws)) == []

        acks = [a for a in answers if isinstance(a, Ack)]
        codes = Counter(a.code for a in answers if isinstance(a, ServerError))
        assert len(acks) == 50, codes
        assert sorted(a.coins for a in acks) == list(range(50))
        assert {a.event for a in acks} == {c["event"] for c in received}
        assert codes == {"insufficient_coins": 150}
