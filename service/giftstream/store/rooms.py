"""Live rooms: opening, ending, state, and history for replay."""

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Redis, fcall, read_hash, read_stream, text


@dataclass(frozen=True, slots=True)
class RoomState:
    id: str
    host: str
    live: bool
    epoch: str
    offset: int
    diamonds: int
    viewers: int
    # False when the host may not receive gifts (under the minimum age).
    receives: bool = True


class RoomForbidden(Exception):
    pass


class NoSuchRoom(Exception):
    pass


def new_room_id() -> str:
    return "r" + secrets.token_hex(6)


def new_epoch() -> str:
    return secrets.token_hex(4)


async def open_room(r: Redis, host: str, receives: bool) -> tuple[str, str]:
    """Open (or reopen) the host's room and set it live; returns (room, epoch)."""
    reply = await fcall(r, "room_claim", [keys.account(host)], [new_room_id()])
    if reply[0] != b"ok":
        raise NoSuchRoom(host)
    room = reply[1].decode()
    reply = await fcall(
        r,
        "room_open",
        [keys.room(room)],
        [host, new_epoch(), keys.room_channel(room), "1" if receives else "0"],
    )
    if reply[0] == b"forbidden":
        raise RoomForbidden(room)
    await r.zadd(keys.LIVE_ROOMS, {room: int(time.time() * 1000)})
    return room, reply[1].decode()


async def end_room(r: Redis, room: str, host: str) -> None:
    reply = await fcall(r, "room_end", [keys.room(room)], [host, keys.room_channel(room)])
    if reply[0] == b"not_found":
        raise NoSuchRoom(room)
    if reply[0] == b"forbidden":
        raise RoomForbidden(room)
    await r.zrem(keys.LIVE_ROOMS, room)


async def live_rooms(r: Redis, limit: int) -> list[RoomState]:
    """The most recently opened live rooms, newest first."""
    ids = [text(i) for i in cast(list[bytes], await r.zrevrange(keys.LIVE_ROOMS, 0, limit - 1))]
    states = [await room_state(r, room) for room in ids]
    return [s for s in states if s is not None and s.live]


def _state(room: str, h: Mapping[bytes, bytes]) -> RoomState:
    return RoomState(
        id=room,
        host=h[b"host"].decode(),
        live=h.get(b"live") == b"1",
        epoch=h[b"epoch"].decode(),
        offset=int(h.get(b"offset", b"0")),
        diamonds=int(h.get(b"diamonds", b"0")),
        viewers=max(0, int(h.get(b"viewers", b"0"))),
        receives=h.get(b"receives", b"1") == b"1",
    )


async def room_state(r: Redis, room: str) -> RoomState | None:
    h = await read_hash(r, keys.room(room))
    if not h or b"host" not in h:
        return None
    return _state(room, h)


async def change_viewers(r: Redis, room: str, delta: int) -> None:
    await r.hincrby(keys.room(room), "viewers", delta)


async def host_diamonds(r: Redis, room: str | None) -> int:
    if room is None:
        return 0
    value = await r.hget(keys.room(room), "diamonds")
    return int(value) if value is not None else 0


async def history_after(
    r: Redis, room: str, offset: int, batch: int = 1000
) -> list[dict[str, Any]]:
    """Every stored event of the room with an offset above `offset`, in offset order."""
    frames: list[dict[str, Any]] = []
    start = f"{offset + 1}-0"
    while True:
        entries = await read_stream(r, keys.room_events(room), start, batch)
        for _, fields in entries:
            frames.append(msgpack.unpackb(fields[b"f"], raw=False))
        if len(entries) < batch:
            return frames
        last = int(entries[-1][0].split(b"-")[0])
        start = f"{last + 1}-0"
