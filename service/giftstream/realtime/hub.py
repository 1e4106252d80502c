"""The fan-out hub of one worker: one sharded pub/sub subscription per room with local members.

Each room event arrives here once per worker. Lossless frames (credits, room state, session
summaries) go straight onto the members' bounded queues; lossy ones (gift animations, streak
updates, viewer counts, leaderboards, broadcast announcements) are merged per room and sent once
per tick — the latest streak update replaces the earlier ones — so a fast streak in a big room
costs each viewer a bounded number of frames per second. Each frame or batch is encoded once
per subprotocol, and putting it on a queue never awaits a socket.

The hub also keeps this worker's share of each room's viewer count in the store, and recovers
from a lost pub/sub connection: it reconnects, resubscribes, and replays every room's missed
events from the room history (members drop the duplicates by offset).
"""

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from giftstream import metrics
from giftstream.domain.streaks import StreakBook, StreakTap
from giftstream.realtime.frames import Encoded, batch, single
from giftstream.realtime.member import Member
from giftstream.settings import Settings
from giftstream.shutdown import stop_task
from giftstream.store import keys, rooms
from giftstream.store.connection import (
    SOCKET_TIMEOUT_S,
    Redis,
    connect_pubsub,
    connect_pubsub_node,
)

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 5.0
RECONNECT_DELAY_S = 0.5
# Lossless frames: never merged, never dropped for a slow client.
LOSSLESS = frozenset({"credit", "room", "session_summary", "chest", "chest_result", "battle"})
# The room frames of protocol v1; members that did not opt in get only these.
V1_ROOM_FRAMES = frozenset({"gift", "credit"})


@dataclass(eq=False)
class RoomChannel:
    room: str
    host: str
    live: bool
    receives: bool
    region: str
    book: StreakBook
    viewers: int = 0
    members: set[Member] = field(default_factory=set)
    # Frames waiting for the tick, in order, by merge key (a later lossy frame replaces an
    # earlier one with the same key; lossless frames have keys of their own).
    queued: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Whether frames went out in this tick: the first message of a quiet tick goes at once (a
    # quiet room sees every frame without delay), later ones wait for the tick.
    sent_this_tick: bool = False
    presence_due: bool = True
    presence_refresh_at: float = 0.0
    subscribed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False)
class _Link:
    """One pub/sub connection and the task that reads it."""

    client: aioredis.Redis
    pubsub: PubSub
    reader: asyncio.Task[None] | None = None


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def _merge_key(frame: dict[str, Any]) -> str:
    kind = str(frame.get("t"))
    if kind in LOSSLESS:
        ident = frame.get("offset") or frame.get("chest") or frame.get("session")
        if kind == "battle":  # each state change of a battle is its own frame
            ident = f"{frame.get('battle')}:{frame.get('state')}"
        return f"{kind}:{ident}:{frame.get('live', '')}"
    if kind == "gift":
        streak = frame.get("streak")
        return f"streak:{streak['id']}" if isinstance(streak, dict) else f"gift:{frame['event']}"
    if kind == "broadcast":
        return f"broadcast:{frame['event']}"
    if kind == "presence":
        return f"presence:{frame['user']}"
    if kind == "battle_score":
        return f"battle_score:{frame['battle']}"
    return kind  # viewers, leaderboard: only the latest matters


class Hub:
    def __init__(self, redis: Redis, redis_url: str, settings: Settings) -> None:
        self._redis = redis
        self._url = redis_url
        self._settings = settings
        self._tick_s = settings.coalesce_tick_ms / 1000
        self.worker_id = secrets.token_hex(6)
        self._rooms: dict[str, RoomChannel] = {}
        # One pub/sub connection per server: the only one, or each cluster node that owns a
        # room we subscribe to (sharded channels must be subscribed on their slot's node).
        self._links: dict[str, _Link] = {}
        self._failed = asyncio.Event()
        # Set at shutdown: the background loops end at their next turn even if a cancel is lost.
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._resync: asyncio.Task[None] | None = None
        self._pong = asyncio.Event()
        self.healthy = False
        self.reconnects = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._watch_forever(), name="hub-watcher"),
            asyncio.create_task(self._tick_forever(), name="hub-ticker"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            await stop_task(task, self._settings.shutdown_timeout_s, f"the hub's {task.get_name()}")
        for channel in list(self._rooms.values()):
            with contextlib.suppress(Exception):
                await rooms.update_presence(self._redis, channel.room, self.worker_id, 0, 0)
        await self._disconnect()

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
                link.reader = asyncio.create_task(self._read(link), name="hub-reader")

    async def _connect(self) -> None:
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()
        # Broadcast gifts, on a plain channel: every worker hears every region.
        main = await self._link(keys.BROADCAST_CHANNEL)
        await main.subscribe(keys.BROADCAST_CHANNEL)
        self._start_reader(main)
        for channel in self._rooms.values():
            await self._subscribe(keys.room_channel(channel.room))
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

    async def attach(self, member: Member, state: rooms.RoomState) -> int:
        """Add a member; returns, once the room's events are sure to reach it, the room's
        viewer count."""
        channel = self._rooms.get(member.room)
        if channel is None:
            channel = RoomChannel(
                room=member.room,
                host=state.host,
                live=state.live,
                receives=state.receives,
                region=state.region,
                book=StreakBook(self._settings.streak_timeout_ms),
                viewers=state.viewers,
            )
            self._rooms[member.room] = channel
            metrics.ROOMS_SUBSCRIBED.set(len(self._rooms))
            if self.healthy:
                try:
                    await self._subscribe(keys.room_channel(member.room))
                except (ConnectionError, OSError) as e:
                    self._failed_with(e)
        channel.members.add(member)
        await asyncio.shield(channel.subscribed)
        await self._presence_changed(channel, member, joined=True)
        return channel.viewers

    async def detach(self, member: Member) -> None:
        channel = self._rooms.get(member.room)
        if channel is None or member not in channel.members:
            return
        channel.members.discard(member)
        await self._presence_changed(channel, member, joined=False)
        # Another member may have come, or the room been dropped, while we awaited.
        if channel.members or self._rooms.get(member.room) is not channel:
            return
        del self._rooms[member.room]
        if channel.presence_due:  # a big room's last leave: clear this worker's share now
            await self._update_presence(channel)
        metrics.ROOMS_SUBSCRIBED.set(len(self._rooms))
        if self.healthy:
            with contextlib.suppress(Exception):
                channel_name = keys.room_channel(member.room)
                await (await self._link(channel_name)).sunsubscribe(channel_name)

    async def _presence_changed(self, channel: RoomChannel, member: Member, joined: bool) -> None:
        """Small rooms count every join and leave at once and show them; big rooms update
        their count once per tick, with no frame per join."""
        small = channel.viewers <= self._settings.presence_frames_max_viewers
        if not small:
            channel.presence_due = True
            return
        await self._update_presence(channel)
        frame = {
            "t": "presence",
            "room": channel.room,
            "user": member.user,
            "name": member.name,
            "joined": joined,
        }
        with contextlib.suppress(Exception):
            await self._redis.spublish(keys.room_channel(channel.room), msgpack.packb([frame]))

    async def _update_presence(self, channel: RoomChannel) -> None:
        channel.presence_due = False
        ttl_s = self._settings.presence_ttl_s
        channel.presence_refresh_at = time.monotonic() + ttl_s / 3
        expires = int(time.time() * 1000) + ttl_s * 1000
        try:
            # The host is not one of its own viewers.
            watching = sum(1 for m in channel.members if not m.is_host)
            channel.viewers = await rooms.update_presence(
                self._redis, channel.room, self.worker_id, watching, expires
            )
        except Exception as e:  # a count is approximate: try again on the next tick
            log.warning("presence update of room %s failed (%s)", channel.room, e)
            channel.presence_due = True

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

    # -- the reader --------------------------------------------------------------------------

    async def _read(self, link: "_Link") -> None:
        try:
            while True:
                message = await link.pubsub.get_message(timeout=None)
                if message is not None:
                    self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of a connection: recover, never die
            self._failed_with(e)

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
            except Exception as e:  # the store may be down or failing over: try again
                log.warning("pub/sub reconnect failed (%s)", e)
                await self._disconnect()
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
            encoded = single(frame)
            for member in members:
                if member.wants(kind):
                    member.replay(encoded, lossless=kind in LOSSLESS)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            channel = self._rooms.get(keys.room_from_key(message["channel"].decode()))
            if channel is not None:
                self._dispatch(channel, msgpack.unpackb(message["data"], raw=False))
        elif kind == "message":
            self._on_broadcast(msgpack.unpackb(message["data"], raw=False))
        elif kind == "ssubscribe":
            channel = self._rooms.get(keys.room_from_key(message["channel"].decode()))
            if channel is not None and not channel.subscribed.done():
                channel.subscribed.set_result(None)
        elif kind == "sunsubscribe":
            # A room we still serve, unsubscribed by the server: its slot moved to another node
            # (a fail-over or a resharding). Resubscribe where it lives now, and replay.
            if keys.room_from_key(message["channel"].decode()) in self._rooms:
                self._failed_with(ConnectionError("a room's slot moved to another node"))
        elif kind == "pong":
            self._pong.set()

    # -- fan-out -----------------------------------------------------------------------------

    def _dispatch(self, channel: RoomChannel, frames: list[dict[str, Any]]) -> None:
        """One message of the room (e.g. a gift, its credit and the leaderboard): sent at once
        in a quiet tick, else queued for the tick, in order, lossy frames merged."""
        for frame in frames:
            kind = frame.get("t")
            if kind == "room":
                channel.live = bool(frame.get("live"))
            elif kind == "viewers":
                channel.viewers = int(frame["viewers"])
            elif kind == "gift":
                self._track_streak(channel, frame)
        if not channel.sent_this_tick and not channel.queued:
            channel.sent_this_tick = True
            self._send(channel, frames)
            return
        for frame in frames:
            key = _merge_key(frame)
            # A newer frame replaces the one it merges with, and takes its place at the end.
            channel.queued.pop(key, None)
            channel.queued[key] = frame

    def _on_broadcast(self, frame: dict[str, Any]) -> None:
        for channel in self._rooms.values():
            if channel.live and channel.region == frame.get("region"):
                self._dispatch(channel, [frame])

    def _send(self, channel: RoomChannel, frames: list[dict[str, Any]]) -> None:
        """Members that opted in get their frames as one `batch` when there are several; the
        others get their protocol v1 frames (`gift`, and `credit` for the host), each its own
        message, all in one write. Each frame or batch is encoded once per subprotocol, and
        what a member gets depends only on whether it is the host and opted in."""
        one_by_one = [single(f) for f in frames if f.get("t") in V1_ROOM_FRAMES]
        # Per kind of member (opted in, host): what it gets.
        chosen: dict[tuple[bool, bool], list[tuple[Encoded, bool]]] = {}
        for member in channel.members:
            kind = (member.extras, member.is_host)
            mine = chosen.get(kind)
            if mine is None:
                if member.extras:
                    wanted = [f for f in frames if member.wants(f.get("t"))]
                    lossless = any(f.get("t") in LOSSLESS for f in wanted)
                    mine = [(batch(channel.room, wanted), lossless)] if wanted else []
                else:
                    mine = [
                        (one, one.frame.get("t") in LOSSLESS)
                        for one in one_by_one
                        if member.wants(one.frame.get("t"))
                    ]
                chosen[kind] = mine
            if mine:
                member.deliver(mine)

    def _flush(self, channel: RoomChannel) -> None:
        """At a tick: send what waited, or open the next tick for an immediate send."""
        if not channel.queued:
            channel.sent_this_tick = False
            return
        frames = list(channel.queued.values())
        channel.queued.clear()
        self._send(channel, frames)

    def _track_streak(self, channel: RoomChannel, frame: dict[str, Any]) -> None:
        streak = frame.get("streak")
        sender = str(frame["from"])
        if isinstance(streak, dict) and streak.get("end"):
            return
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
            self._dispatch(channel, [last])

    async def _tick_forever(self) -> None:
        next_health = time.monotonic() + HEALTH_INTERVAL_S
        while not self._stopping.is_set():
            await asyncio.sleep(self._tick_s)
            now_ms, now = _monotonic_ms(), time.monotonic()
            for channel in list(self._rooms.values()):
                try:
                    if len(channel.book):
                        self._end_streaks(channel, channel.book.expire(now_ms))
                    self._flush(channel)
                    if channel.presence_due or now >= channel.presence_refresh_at:
                        await self._update_presence(channel)
                except Exception:  # one room's failure must not stop every room's ticks
                    log.exception("tick of room %s failed", channel.room)
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL_S
                if self.healthy and not await self.ping(SOCKET_TIMEOUT_S / 2):
                    log.warning("pub/sub connection does not answer; reconnecting")
                    await self._force_reconnect()

    async def _force_reconnect(self) -> None:
        self._failed_with(ConnectionError("no answer to PING"))
