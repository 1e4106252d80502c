"""The fan-out hub of one worker: one sharded pub/sub subscription per room with local members.

Each room event arrives here once per worker, is encoded once per subprotocol, and is put on each
member's bounded queue without awaiting any socket. If the subscriber connection fails, the hub
reconnects, resubscribes, and replays every room's missed events from the room history, so a
dropped pub/sub connection loses nothing (members drop the duplicates by offset).
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
from redis.asyncio.client import PubSub

from giftstream import metrics
from giftstream.domain.streaks import StreakBook, StreakTap
from giftstream.realtime.frames import Encoded
from giftstream.realtime.member import Member
from giftstream.store import keys, rooms
from giftstream.store.connection import SOCKET_TIMEOUT_S, Redis
from giftstream.store.connection import connect_pubsub as _connect_pubsub

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 5.0
RECONNECT_DELAY_S = 0.5


@dataclass(eq=False)
class RoomChannel:
    room: str
    host: str
    live: bool
    receives: bool
    book: StreakBook
    members: set[Member] = field(default_factory=set)
    subscribed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class Hub:
    def __init__(self, redis: Redis, redis_url: str, streak_timeout_ms: int, tick_s: float) -> None:
        self._redis = redis
        self._url = redis_url
        self._streak_timeout_ms = streak_timeout_ms
        self._tick_s = tick_s
        self._rooms: dict[str, RoomChannel] = {}
        self._pubsub: PubSub | None = None
        self._client: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._resync: asyncio.Task[None] | None = None
        self._pong = asyncio.Event()
        self.healthy = False
        self.reconnects = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="hub-reader"),
            asyncio.create_task(self._tick_forever(), name="hub-ticker"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def _connect(self) -> None:
        self._client = _connect_pubsub(self._url)
        self._pubsub = self._client.pubsub()
        # A channel of our own, so the connection exists before any room is joined.
        await self._pubsub.subscribe(f"{keys.PREFIX}:hub:{id(self)}")
        for channel in self._rooms.values():
            await self._pubsub.ssubscribe(keys.room_channel(channel.room))
        self.healthy = True

    async def _disconnect(self) -> None:
        self.healthy = False
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        self._pubsub = self._client = None

    # -- membership --------------------------------------------------------------------------

    def room_live(self, room: str) -> bool:
        channel = self._rooms.get(room)
        return channel is not None and channel.live

    def room_receives(self, room: str) -> bool:
        channel = self._rooms.get(room)
        return channel is None or channel.receives

    def room_host(self, room: str) -> str | None:
        channel = self._rooms.get(room)
        return channel.host if channel is not None else None

    async def attach(self, member: Member, state: rooms.RoomState) -> None:
        """Add a member; returns once the room's events are sure to reach it."""
        channel = self._rooms.get(member.room)
        if channel is None:
            channel = RoomChannel(
                room=member.room,
                host=state.host,
                live=state.live,
                receives=state.receives,
                book=StreakBook(self._streak_timeout_ms),
            )
            self._rooms[member.room] = channel
            metrics.ROOMS_SUBSCRIBED.set(len(self._rooms))
            if self._pubsub is not None:
                await self._pubsub.ssubscribe(keys.room_channel(member.room))
        channel.members.add(member)
        await asyncio.shield(channel.subscribed)

    async def detach(self, member: Member) -> None:
        channel = self._rooms.get(member.room)
        if channel is None:
            return
        channel.members.discard(member)
        if channel.members:
            return
        del self._rooms[member.room]
        metrics.ROOMS_SUBSCRIBED.set(len(self._rooms))
        if self._pubsub is not None and self.healthy:
            with contextlib.suppress(Exception):
                await self._pubsub.sunsubscribe(keys.room_channel(member.room))

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when the subscriber connection answers a PING now."""
        if self._pubsub is None or not self.healthy:
            return False
        self._pong.clear()
        try:
            await self._pubsub.ping()
            await asyncio.wait_for(self._pong.wait(), timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            return False
        return True

    # -- the reader --------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        while True:
            try:
                await self._read_until_failure()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure of the connection: recover, never die
                log.warning("pub/sub connection lost (%s); resubscribing", e)
            await self._recover()

    async def _read_until_failure(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise ConnectionError("no pub/sub connection")
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None:
                self._on_message(message)

    async def _recover(self) -> None:
        await self._disconnect()
        # Until its room's history is replayed, each member holds back the live events, so
        # that the replay fills the gap in order before anything newer is delivered.
        cut_off: list[tuple[RoomChannel, list[Member]]] = []
        for channel in self._rooms.values():
            if channel.subscribed.done():
                channel.subscribed = asyncio.get_running_loop().create_future()
            members = [m for m in channel.members if not m.replaying]
            for member in members:
                member.replaying = True
            cut_off.append((channel, members))
        while True:
            try:
                await self._connect()
                break
            except (ConnectionError, OSError) as e:
                log.warning("pub/sub reconnect failed (%s)", e)
                await asyncio.sleep(RECONNECT_DELAY_S)
        self.reconnects += 1
        self._resync = asyncio.create_task(self._resync_all(cut_off), name="hub-resync")

    async def _resync_all(self, cut_off: list[tuple[RoomChannel, list[Member]]]) -> None:
        """Replay from each room's history what its members may have missed while cut off."""
        for channel, members in cut_off:
            try:
                await asyncio.shield(channel.subscribed)
                await self._resync_room(channel, members)
            except Exception:
                log.exception("replaying room %s after a pub/sub reconnect failed", channel.room)
            finally:
                for member in members:
                    member.finish_replay()

    async def _resync_room(self, channel: RoomChannel, members: list[Member]) -> None:
        if not members:
            return
        state = await rooms.room_state(self._redis, channel.room)
        if state is not None:
            channel.live = state.live
        since = min(m.last_offset for m in members)
        for frame in await rooms.history_after(self._redis, channel.room, since):
            kind = frame.get("t")
            encoded = Encoded(frame, frame.get("offset"))
            for member in members:
                if member.wants(kind):
                    member.replay(encoded, lossless=kind != "gift")

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            channel = self._rooms.get(_room_of(message["channel"]))
            if channel is None:
                return
            for frame in msgpack.unpackb(message["data"], raw=False):
                self._dispatch(channel, frame)
        elif kind == "ssubscribe":
            channel = self._rooms.get(_room_of(message["channel"]))
            if channel is not None and not channel.subscribed.done():
                channel.subscribed.set_result(None)
        elif kind == "pong":
            self._pong.set()

    # -- fan-out -----------------------------------------------------------------------------

    def _dispatch(self, channel: RoomChannel, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "room":
            channel.live = bool(frame.get("live"))
        # Animations are lossy; credits and room state are not.
        lossless = kind != "gift"
        encoded = Encoded(frame, frame.get("offset"))
        for member in channel.members:
            if member.wants(kind):
                member.deliver(encoded, lossless)
        if kind == "gift":
            self._track_streak(channel, frame)

    def _track_streak(self, channel: RoomChannel, frame: dict[str, Any]) -> None:
        streak = frame.get("streak")
        sender = str(frame["from"])
        if not isinstance(streak, dict):
            self._end_streaks(channel, channel.book.close_sender(sender))
            return
        tap = StreakTap(
            streak_id=str(streak["id"]),
            sender=sender,
            gift=str(frame["gift"]),
            repeat=int(streak["repeat"]),
            seen_ms=_monotonic_ms(),
            event=frame,
        )
        self._end_streaks(channel, channel.book.observe(tap))

    def _end_streaks(self, channel: RoomChannel, ended: list[StreakTap]) -> None:
        for tap in ended:
            last = dict(tap.event)
            last["streak"] = {"id": tap.streak_id, "repeat": tap.repeat, "end": True}
            encoded = Encoded(last)
            for member in channel.members:
                member.deliver(encoded, lossless=False)

    async def _tick_forever(self) -> None:
        next_health = time.monotonic() + HEALTH_INTERVAL_S
        while True:
            await asyncio.sleep(self._tick_s)
            now = _monotonic_ms()
            for channel in list(self._rooms.values()):
                if len(channel.book):
                    self._end_streaks(channel, channel.book.expire(now))
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + HEALTH_INTERVAL_S
                if self.healthy and not await self.ping(SOCKET_TIMEOUT_S / 2):
                    log.warning("pub/sub connection does not answer; reconnecting")
                    await self._force_reconnect()

    async def _force_reconnect(self) -> None:
        if self._pubsub is not None and self._pubsub.connection is not None:
            await self._pubsub.connection.disconnect()


def _room_of(channel: bytes) -> str:
    return keys.room_from_key(channel.decode())
