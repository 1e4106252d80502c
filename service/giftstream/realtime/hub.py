"""The fan-out hub of one worker: the asyncio glue between the store's pub/sub links
(store/subscriber.py), the rooms' sans-I/O cores (realtime/room.py) and the members' send buffers.

Each room event arrives here once per worker and goes to its `Room`, whose deliveries are put on
the members' bounded buffers — never awaiting a socket. A tick task sends what waited, ends the
streaks that fell quiet, and keeps this worker's share of each room's viewer count in the store.
When the pub/sub links were lost and restored, the hub replays every room's missed events from
its history (members drop the duplicates by offset).
"""

import asyncio
import contextlib
import logging
import secrets
import time

from giftstream import metrics
from giftstream.realtime.member import Member
from giftstream.realtime.room import Delivery, Frame, Room
from giftstream.settings import Settings
from giftstream.shutdown import stop_task
from giftstream.store import rooms
from giftstream.store.connection import Redis
from giftstream.store.subscriber import Subscriber

log = logging.getLogger(__name__)


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def _perform(deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        delivery.perform()


class Hub:
    def __init__(self, redis: Redis, redis_url: str, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._tick_s = settings.coalesce_tick_ms / 1000
        self.worker_id = secrets.token_hex(6)
        self._rooms: dict[str, Room] = {}
        self._subscriber = Subscriber(
            redis,
            redis_url,
            on_room=self._on_room,
            on_broadcast=self._on_broadcast,
            on_lost=self._on_lost,
            on_restored=self._on_restored,
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
        # Rooms and their members cut off by a lost pub/sub link, to replay once it is back.
        self._cut_off: list[tuple[Room, list[Member]]] = []
        self._resyncs: set[asyncio.Task[None]] = set()
        # Set at shutdown: the tick loop ends at its next turn even if a cancel is lost.
        self._stopping = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._subscriber.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="hub-ticker")

    async def stop(self) -> None:
        self._stopping.set()
        timeout_s = self._settings.shutdown_timeout_s
        tasks = [self._ticker] if self._ticker is not None else []
        for task in tasks + list(self._resyncs):
            await stop_task(task, timeout_s, f"the hub's {task.get_name()}")
        await self._subscriber.stop()
        for room in list(self._rooms.values()):
            with contextlib.suppress(Exception):
                await rooms.update_presence(self._redis, room.id, self.worker_id, 0, 0)

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when the pub/sub connections are up and the main one answers a PING now."""
        return await self._subscriber.ping(timeout_s)

    # -- membership --------------------------------------------------------------------------

    def room_live(self, room: str) -> bool:
        found = self._rooms.get(room)
        return found is not None and found.live

    def room_receives(self, room: str) -> bool:
        found = self._rooms.get(room)
        return found is None or found.receives

    def room_host(self, room: str) -> str | None:
        found = self._rooms.get(room)
        return found.host if found is not None else None

    async def attach(self, member: Member, state: rooms.RoomState) -> int:
        """Add a member; returns, once the room's events are sure to reach it, the room's
        viewer count."""
        room = self._rooms.get(member.room)
        if room is None:
            room = Room(
                id=member.room,
                host=state.host,
                live=state.live,
                receives=state.receives,
                region=state.region,
                streak_timeout_ms=self._settings.streak_timeout_ms,
                presence_frames_max_viewers=self._settings.presence_frames_max_viewers,
                viewers=state.viewers,
            )
            self._rooms[member.room] = room
            metrics.ROOMS_SUBSCRIBED.set(len(self._rooms))
            await self._subscriber.subscribe(member.room)
        room.members.add(member)
        await self._subscriber.confirmed(member.room)
        await self._presence_changed(room, member, joined=True)
        return room.viewers

    async def detach(self, member: Member) -> None:
        room = self._rooms.get(member.room)
        if room is None or member not in room.members:
            return
        room.members.discard(member)
        await self._presence_changed(room, member, joined=False)
        # Another member may have come, or the room been dropped, while we awaited.
        if room.members or self._rooms.get(member.room) is not room:
            return
        del self._rooms[member.room]
        if room.presence_due:  # a big room's last leave: clear this worker's share now
            await self._update_presence(room)
        metrics.ROOMS_SUBSCRIBED.set(len(self._rooms))
        if member.room not in self._rooms:  # joined again meanwhile: the subscription serves it
            await self._subscriber.unsubscribe(member.room)

    # -- presence ----------------------------------------------------------------------------

    async def _presence_changed(self, room: Room, member: Member, joined: bool) -> None:
        frame = room.presence_changed(member, joined)
        if frame is None:
            return
        await self._update_presence(room)
        with contextlib.suppress(Exception):
            await rooms.publish(self._redis, room.id, [frame])

    async def _update_presence(self, room: Room) -> None:
        ttl_s = self._settings.presence_ttl_s
        watching = room.presence_sent(_monotonic_ms(), ttl_s * 1000 // 3)
        expires = int(time.time() * 1000) + ttl_s * 1000
        try:
            room.viewers = await rooms.update_presence(
                self._redis, room.id, self.worker_id, watching, expires
            )
        except Exception as e:
            log.warning("presence update of room %s failed (%s)", room.id, e)
            room.presence_failed()

    # -- from the subscriber -----------------------------------------------------------------

    def _on_room(self, room_id: str, frames: list[Frame]) -> None:
        room = self._rooms.get(room_id)
        if room is not None:
            _perform(room.on_frames(frames, _monotonic_ms()))

    def _on_broadcast(self, frame: Frame) -> None:
        now_ms = _monotonic_ms()
        for room in self._rooms.values():
            _perform(room.on_broadcast(frame, now_ms))

    def _on_lost(self) -> None:
        self._cut_off += [(room, room.cut_off()) for room in self._rooms.values()]

    def _on_restored(self) -> None:
        cut_off, self._cut_off = self._cut_off, []
        task = asyncio.create_task(self._resync_all(cut_off), name="hub-resync")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resync_all(self, cut_off: list[tuple[Room, list[Member]]]) -> None:
        """Replay from each room's history what its members may have missed while cut off."""
        for room, members in cut_off:
            try:
                await self._subscriber.confirmed(room.id)
                await self._resync_room(room, members)
            except Exception:
                log.exception("replaying room %s after a pub/sub reconnect failed", room.id)
            finally:
                for member in members:
                    member.finish_replay()

    async def _resync_room(self, room: Room, members: list[Member]) -> None:
        if not members:
            return
        state = await rooms.room_state(self._redis, room.id)
        if state is not None:
            room.live = state.live
        since = min(m.last_offset for m in members)
        _perform(room.replay(members, await rooms.history_after(self._redis, room.id, since)))

    # -- the tick ----------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self._tick_s)
            now_ms = _monotonic_ms()
            for room in list(self._rooms.values()):
                try:
                    _perform(room.tick(now_ms))
                    if room.presence_due_at(now_ms):
                        await self._update_presence(room)
                except Exception:  # one room's failure must not stop every room's ticks
                    log.exception("tick of room %s failed", room.id)
