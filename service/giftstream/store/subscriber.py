"""The worker's pub/sub links: the rooms' sharded channels and the broadcast channel, decoded and
handed to the hub, kept alive, and recovered when lost.

One link (a connection and the task that reads it) per server: the only one, or each cluster node
that owns a room subscribed to (sharded channels must be subscribed on their slot's node). Every
`HEALTH_INTERVAL_S` the main link must answer a PING. A failure of any link — an error, no answer,
or a room unsubscribed by the server because its slot moved — drops every link; the subscriber
calls `on_lost`, reconnects (refreshing a cluster's topology) and resubscribes every room, then
calls `on_restored`, after which the hub replays from the rooms' histories what was missed.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from giftstream.shutdown import stop_task
from giftstream.store import keys
from giftstream.store.connection import (
    SOCKET_TIMEOUT_S,
    Redis,
    connect_pubsub,
    connect_pubsub_node,
)

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 5.0
RECONNECT_DELAY_S = 0.5

Frame = dict[str, Any]


@dataclass(eq=False)
class _Link:
    """One pub/sub connection and the task that reads it."""

    client: aioredis.Redis
    pubsub: PubSub
    reader: asyncio.Task[None] | None = None


class Subscriber:
    def __init__(
        self,
        redis: Redis,
        url: str,
        *,
        on_room: Callable[[str, list[Frame]], None],
        on_broadcast: Callable[[Frame], None],
        on_lost: Callable[[], None],
        on_restored: Callable[[], None],
        shutdown_timeout_s: float,
    ) -> None:
        self._redis = redis
        self._url = url
        self._on_room = on_room
        self._on_broadcast = on_broadcast
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._shutdown_timeout_s = shutdown_timeout_s
        # The rooms subscribed to, each with its subscription's confirmation.
        self._rooms: dict[str, asyncio.Future[None]] = {}
        self._links: dict[str, _Link] = {}
        self._failed = asyncio.Event()
        # Set at shutdown: the background loops end at their next turn even if a cancel is lost.
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pong = asyncio.Event()
        self.healthy = False
        self.reconnects = 0

    async def start(self) -> None:
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._watch_forever(), name="subscriber-watcher"),
            asyncio.create_task(self._check_forever(), name="subscriber-health"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            await stop_task(task, self._shutdown_timeout_s, f"the subscriber's {task.get_name()}")
        await self._disconnect()

    # -- rooms -------------------------------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        """Subscribe to the room's channel (if not already): `confirmed` tells when its
        messages are sure to arrive."""
        if room in self._rooms:
            return
        self._rooms[room] = asyncio.get_running_loop().create_future()
        if self.healthy:  # else the recovery under way subscribes it
            try:
                await self._subscribe(keys.room_channel(room))
            except (ConnectionError, OSError) as e:
                self._failed_with(e)

    async def confirmed(self, room: str) -> None:
        """Once the room's subscription is confirmed (at once for a room not subscribed)."""
        future = self._rooms.get(room)
        if future is not None:
            await asyncio.shield(future)

    async def unsubscribe(self, room: str) -> None:
        if self._rooms.pop(room, None) is None or not self.healthy:
            return
        with contextlib.suppress(Exception):
            channel = keys.room_channel(room)
            await (await self._link(channel)).sunsubscribe(channel)

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when the pub/sub connections are up and the main one answers a PING now."""
        if not self.healthy:
            return False
        self._pong.clear()
        try:
            await (await self._link(keys.BROADCAST_CHANNEL)).ping()
            await asyncio.wait_for(self._pong.wait(), timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            return False
        return self.healthy

    # -- links -------------------------------------------------------------------------------

    def _address_of(self, channel: str) -> str:
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(channel)
            if node is None:
                raise ConnectionError(f"no cluster node serves {channel}")
            return f"{node.host}:{node.port}"
        return "main"

    async def _link(self, channel: str) -> PubSub:
        """The pub/sub connection on which `channel` is to be subscribed."""
        address = self._address_of(channel)
        link = self._links.get(address)
        if link is None:
            if address == "main":
                client = connect_pubsub(self._url)
            else:
                host, port = address.rsplit(":", 1)
                client = connect_pubsub_node(host, int(port), self._url)
            link = _Link(client, client.pubsub())
            self._links[address] = link
        return link.pubsub

    def _start_reader(self, pubsub: PubSub) -> None:
        for link in self._links.values():
            if link.pubsub is pubsub and link.reader is None:
                link.reader = asyncio.create_task(self._read(link), name="subscriber-reader")

    async def _connect(self) -> None:
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()
        # Broadcast gifts, on a plain channel: every worker hears every region.
        main = await self._link(keys.BROADCAST_CHANNEL)
        await main.subscribe(keys.BROADCAST_CHANNEL)
        self._start_reader(main)
        for room in list(self._rooms):
            await self._subscribe(keys.room_channel(room))
        self.healthy = True

    async def _subscribe(self, channel: str) -> None:
        pubsub = await self._link(channel)
        await pubsub.ssubscribe(channel)
        self._start_reader(pubsub)

    async def _disconnect(self) -> None:
        self.healthy = False
        links, self._links = list(self._links.values()), {}
        for link in links:
            if link.reader is not None:
                link.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await link.reader
            with contextlib.suppress(Exception):
                await link.pubsub.aclose()
            with contextlib.suppress(Exception):
                await link.client.aclose()

    # -- reading and recovering --------------------------------------------------------------

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                message = await link.pubsub.get_message(timeout=None)
                if message is not None:
                    self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of a connection: recover, never die
            self._failed_with(e)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            room = keys.room_from_key(message["channel"].decode())
            if room in self._rooms:
                self._on_room(room, msgpack.unpackb(message["data"], raw=False))
        elif kind == "message":
            self._on_broadcast(msgpack.unpackb(message["data"], raw=False))
        elif kind == "ssubscribe":
            future = self._rooms.get(keys.room_from_key(message["channel"].decode()))
            if future is not None and not future.done():
                future.set_result(None)
        elif kind == "sunsubscribe":
            # A room we still serve, unsubscribed by the server: its slot moved to another node
            # (a fail-over or a resharding). Resubscribe where it lives now, and replay.
            if keys.room_from_key(message["channel"].decode()) in self._rooms:
                self._failed_with(ConnectionError("a room's slot moved to another node"))
        elif kind == "pong":
            self._pong.set()

    def _failed_with(self, error: BaseException) -> None:
        if self.healthy:
            log.warning("pub/sub connection lost (%s); resubscribing", error)
        self.healthy = False
        self._failed.set()

    async def _watch_forever(self) -> None:
        while not self._stopping.is_set():
            await self._failed.wait()
            await self._recover()
            self._failed.clear()

    async def _recover(self) -> None:
        await self._disconnect()
        for room, future in list(self._rooms.items()):
            if future.done():
                self._rooms[room] = asyncio.get_running_loop().create_future()
        self._on_lost()
        while True:
            try:
                await self._connect()
                break
            except Exception as e:  # the store may be down or failing over: try again
                log.warning("pub/sub reconnect failed (%s)", e)
                await self._disconnect()
                await asyncio.sleep(RECONNECT_DELAY_S)
        self.reconnects += 1
        self._on_restored()

    async def _check_forever(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if self.healthy and not await self.ping(SOCKET_TIMEOUT_S / 2):
                log.warning("pub/sub connection does not answer; reconnecting")
                self._failed_with(ConnectionError("no answer to PING"))
