"""A worker dying between the debit and the credit of a gift: the outbox and the relay."""

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from giftstream.store import keys
from giftstream.store.connection import Redis, read_hash, read_stream
from giftstream.store.embedded import EmbeddedValkey
from support import (
    Frame,
    ServerProcess,
    User,
    audit,
    eventually,
    history_positions,
    raw_connected,
    room_history,
    serving,
    store,
)

RECV_S = 15.0
# What the relay repairs in the background, on a busy machine too.
RELAY_S = 20.0
CRASH_EXIT_CODE = 70
GIFT, GIFT_COINS = "confetti", 100


async def coins_of(redis: Redis, user: User) -> int:
    return int((await read_hash(redis, keys.account(user.user)))[b"coins"])


async def diamonds_of(redis: Redis, room: str) -> int:
    return int((await read_hash(redis, keys.room(room))).get(b"diamonds", b"0"))


async def outbox_of(redis: Redis, user: User) -> list[str]:
    return [event.decode() for event in await read_hash(redis, keys.outbox(user.user))]


async def credits_in_ledger(redis: Redis, room: str, event: str) -> int:
    entries = await read_stream(redis, keys.room_ledger(room))
    return sum(1 for _, e in entries if e[b"kind"] == b"credit" and e[b"ref"] == event.encode())


async def history(redis: Redis, room: str) -> list[tuple[str, int, str]]:
    """(type, offset, event) of every event in the room's history."""
    return history_positions(await room_history(redis, room))


async def crash_a_gift(
    url: str,
) -> tuple[User, User, str, str]:
    """Send one gift through a server that dies right after the debit.

    Returns (host, viewer, room, the debited event id found in the viewer's outbox)."""
    crashing = ServerProcess(url, env={"GIFTSTREAM_FAULTS": "crash_after_debit"})
    async with serving(crashing) as (server, api), store(url) as redis:
        host = await api.user(role="host")
        viewer = await api.user(coins=1000)
        room = await api.open_room(host)
        received: list[Frame] = []
        async with raw_connected(server, viewer) as ws:
            await ws.join(room)
            await ws.send({"t": "gift", "id": "crash-1", "room": room, "gift": GIFT})
            with pytest.raises(ConnectionClosed):
                while True:
                    received.append(await ws.recv(RECV_S))
        assert await asyncio.to_thread(server.wait_exit) == CRASH_EXIT_CODE
        assert [f for f in received if f["t"] in ("ack", "error", "gift")] == []

        assert await coins_of(redis, viewer) == 1000 - GIFT_COINS
        assert await diamonds_of(redis, room) == 0
        assert await history(redis, room) == []
        outbox = await outbox_of(redis, viewer)
        assert len(outbox) == 1, outbox
    return host, viewer, room, outbox[0]


async def test_a_crash_after_the_debit_is_credited_once_by_the_relay_of_a_new_server(
    fresh_valkey: EmbeddedValkey,
) -> None:
    url = fresh_valkey.url
    host, viewer, room, event = await crash_a_gift(url)
    code, report = await audit(url)
    assert code == 0 and "in flight 1" in report, report

    env = {"GIFTSTREAM_RELAY_GRACE_MS": "0", "GIFTSTREAM_RELAY_INTERVAL_S": "0.1"}
    async with serving(ServerProcess(url, env=env)) as (server, api), store(url) as redis:

        async def host_credited() -> bool:
            diamonds: int = (await api.wallet(host))["diamonds"]
            return diamonds > 0

        await eventually(host_credited, RELAY_S)
        assert (await api.wallet(host))["diamonds"] == GIFT_COINS

        async def outbox_empty() -> bool:
            return await outbox_of(redis, viewer) == []

        await eventually(outbox_empty, RELAY_S)
        assert await credits_in_ledger(redis, room, event) == 1
        assert await history(redis, room) == [("gift", 1, event), ("credit", 2, event)]

        epoch = (await read_hash(redis, keys.room(room)))[b"epoch"].decode()
        async with (
            raw_connected(server, host) as host_ws,
            raw_connected(server, viewer) as retry_ws,
        ):
            await host_ws.join(room, since={"epoch": epoch, "offset": 0})
            await retry_ws.join(room)
            retried = await retry_ws.gift(room, GIFT, "crash-1")
            later = await retry_ws.gift(room, "rose", "after-crash")
            _, seen = await host_ws.recv_until(
                lambda f: f["t"] == "credit" and f.get("event") == later["event"]
            )

        assert retried == {"t": "ack", "id": "crash-1", "event": event, "coins": 900}
        assert later["t"] == "ack" and later["coins"] == 899, later
        assert [f["event"] for f in seen if f["t"] == "credit"] == [event]
        assert (await api.wallet(viewer))["coins"] == 899
        assert (await api.wallet(host))["diamonds"] == GIFT_COINS + 1
        assert await credits_in_ledger(redis, room, event) == 1

    code, report = await audit(url)
    assert code == 0, report
    assert "audit clean" in report
    assert "in flight 0" in report


async def test_a_retry_after_a_crash_credits_the_pending_gift_once_without_the_relay(
    fresh_valkey: EmbeddedValkey,
) -> None:
    url = fresh_valkey.url
    host, viewer, room, event = await crash_a_gift(url)

    # A relay that waits an hour: only the retry itself can complete the gift.
    env = {"GIFTSTREAM_RELAY_GRACE_MS": "3600000", "GIFTSTREAM_RELAY_INTERVAL_S": "0.1"}
    async with serving(ServerProcess(url, env=env)) as (server, api), store(url) as redis:
        assert (await api.wallet(host))["diamonds"] == 0
        async with (
            raw_connected(server, host) as host_ws,
            raw_connected(server, viewer) as retry_ws,
        ):
            await host_ws.join(room)
            await retry_ws.join(room)
            retried = await retry_ws.gift(room, GIFT, "crash-1")
            again = await retry_ws.gift(room, GIFT, "crash-1")
            credit, _ = await host_ws.recv_until(lambda f: f["t"] == "credit")
            later = await retry_ws.gift(room, "rose", "after-crash")
            _, between = await host_ws.recv_until(
                lambda f: f["t"] == "credit" and f.get("event") == later["event"]
            )

        assert retried == again == {"t": "ack", "id": "crash-1", "event": event, "coins": 900}
        assert (credit["event"], credit["diamonds"], credit["total"]) == (event, 100, 100)
        assert [f for f in between if f["t"] == "credit"] == []
        assert (await api.wallet(viewer))["coins"] == 899
        assert (await api.wallet(host))["diamonds"] == GIFT_COINS + 1

        # Settling a credited gift rides with the next pipeline (or waits settle_linger_ms).
        async def outbox_empty() -> bool:
            return await outbox_of(redis, viewer) == []

        await eventually(outbox_empty, RELAY_S)
        assert await credits_in_ledger(redis, room, event) == 1

    code, report = await audit(url)
    assert code == 0 and "audit clean" in report, report
