"""The store's pub/sub links (store/subscriber.py) on a Valkey of the test's own: decoded room
and broadcast messages, subscriptions confirmed, and a killed connection recovered with the hub's
hooks called around it."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from giftstream.store import keys, rooms
from giftstream.store.connection import Redis, connect
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.subscriber import Subscriber

WAIT_S = 10.0


@dataclass
class Heard:
    """What the subscriber told its hub."""

    rooms: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = field(default_factory=asyncio.Queue)
    broadcasts: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    hooks: list[str] = field(default_factory=list)
    restored: asyncio.Event = field(default_factory=asyncio.Event)

    def lost(self) -> None:
        self.hooks.append("lost")

    def back(self) -> None:
        self.hooks.append("restored")
        self.restored.set()


@pytest.fixture
async def linked(fresh_valkey: EmbeddedValkey) -> AsyncIterator[tuple[Subscriber, Heard, Redis]]:
    heard = Heard()
    r = connect(fresh_valkey.url)
    subscriber = Subscriber(
        r,
        fresh_valkey.url,
        on_room=lambda room, frames: heard.rooms.put_nowait((room, frames)),
        on_broadcast=heard.broadcasts.put_nowait,
        on_lost=heard.lost,
        on_restored=heard.back,
        shutdown_timeout_s=2.0,
    )
    await subscriber.start()
    yield subscriber, heard, r
    await subscriber.stop()
    await r.aclose()


async def subscribed(subscriber: Subscriber, room: str) -> None:
    await subscriber.subscribe(room)
    await asyncio.wait_for(subscriber.confirmed(room), WAIT_S)


async def test_a_rooms_messages_and_broadcasts_arrive_decoded_once_subscribed(
    linked: tuple[Subscriber, Heard, Redis],
) -> None:
    subscriber, heard, r = linked
    await subscribed(subscriber, "r1")
    frames = [{"t": "gift", "room": "r1", "offset": 1}, {"t": "credit", "offset": 2}]
    await rooms.publish(r, "r1", frames)
    assert await asyncio.wait_for(heard.rooms.get(), WAIT_S) == ("r1", frames)
    announcement = {"t": "broadcast", "event": "e1", "region": "eu"}
    await r.publish(keys.BROADCAST_CHANNEL, msgpack.packb(announcement))
    assert await asyncio.wait_for(heard.broadcasts.get(), WAIT_S) == announcement
    assert await subscriber.ping()


async def test_an_unsubscribed_room_is_heard_no_more(
    linked: tuple[Subscriber, Heard, Redis],
) -> None:
    subscriber, heard, r = linked
    await subscribed(subscriber, "gone")
    await subscribed(subscriber, "kept")
    await subscriber.unsubscribe("gone")
    await rooms.publish(r, "gone", [{"t": "viewers", "viewers": 1}])
    await rooms.publish(r, "kept", [{"t": "viewers", "viewers": 2}])
    # One connection delivers in order: had "gone" been heard, it would come first.
    assert await asyncio.wait_for(heard.rooms.get(), WAIT_S) == (
        "kept",
        [{"t": "viewers", "viewers": 2}],
    )
    assert heard.hooks == []


async def test_a_killed_connection_is_reported_lost_then_restored_with_its_rooms_resubscribed(
    linked: tuple[Subscriber, Heard, Redis],
) -> None:
    subscriber, heard, r = linked
    await subscribed(subscriber, "r1")
    await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await asyncio.wait_for(heard.restored.wait(), WAIT_S)
    assert heard.hooks == ["lost", "restored"]
    assert subscriber.reconnects == 1
    await asyncio.wait_for(subscriber.confirmed("r1"), WAIT_S)
    await rooms.publish(r, "r1", [{"t": "viewers", "viewers": 3}])
    assert await asyncio.wait_for(heard.rooms.get(), WAIT_S) == (
        "r1",
        [{"t": "viewers", "viewers": 3}],
    )
    assert await subscriber.ping()
