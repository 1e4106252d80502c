"""Live rooms: opening, ending, state, and history for replay."""

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Redis, fcall, read_hash, read_stream, refusal, text


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
    region: str = ""
    session: int = 0
    # The host's display name when the room was last opened ("" for a room opened before
    # rooms kept it).
    host_name: str = ""
    # The battle the room is in ("" for none): set while the battle is open.
    battle: str = ""


def new_room_id() -> str:
    return "r" + secrets.token_hex(6)


def new_epoch() -> str:
    return secrets.token_hex(4)


def _session_keys(room: str) -> list[str]:
    return [
        keys.room(room),
        keys.room_session(room),
        keys.room_session_gifts(room),
        keys.room_session_top(room),
        keys.room_sessions(room),
    ]


@dataclass(frozen=True, slots=True)
class Opened:
    room: str
    epoch: str
    session: int


async def open_room(
    r: Redis, host: str, receives: bool, region: str, host_name: str = ""
) -> Opened:
    """Open (or reopen) the host's room and set it live, starting a session if it was not."""
    reply = await fcall(r, "giftstream_room_claim", [keys.account(host)], [new_room_id()])
    if reply[0] != b"ok":
        raise refusal(reply)
    room = reply[1].decode()
    reply = await fcall(
        r,
        "giftstream_room_open",
        [*_session_keys(room), keys.room_events(room)],
        [host, new_epoch(), keys.room_channel(room), "1" if receives else "0", region, host_name],
    )
    if reply[0] != b"ok":
        raise refusal(reply)
    await r.zadd(keys.LIVE_ROOMS, {room: int(time.time() * 1000)})
    return Opened(room, text(reply[1]), int(reply[2]))


async def end_room(r: Redis, room: str, host: str, history_ttl_s: int) -> dict[str, Any] | None:
    """End the live session; returns its summary (the last one if the room was not live). The
    room's event history is deleted `history_ttl_s` later unless the room goes live again."""
    reply = await fcall(
        r,
        "giftstream_room_end",
        [*_session_keys(room), keys.room_names(room), keys.room_events(room)],
        [host, keys.room_channel(room), history_ttl_s * 1000],
    )
    if reply[0] in (b"not_found", b"forbidden"):
        raise refusal(reply)
    await r.zrem(keys.LIVE_ROOMS, room)
    if reply[1] is None:
        return None
    summary: dict[str, Any] = msgpack.unpackb(reply[1], raw=False)
    return summary


async def session_summary(r: Redis, room: str, session: int) -> dict[str, Any] | None:
    """An ended session's summary, or the live figures of the current one."""
    packed = await r.hget(keys.room_sessions(room), str(session))
    if packed is not None:
        summary: dict[str, Any] = msgpack.unpackb(packed, raw=False)
        return summary
    # The session's figures and the room's offset at one moment: the live figures count every
    # credit up to `offset` and none after it (a page adds the credits it gets after that).
    async with r.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.room_session(room))
        pipe.hget(keys.room(room), "offset")
        replies = await pipe.execute()
    state = cast(dict[bytes, bytes], replies[0])
    # No session hash at all (a room never opened): session 0 is not "the current one".
    if b"started" not in state or int(state.get(b"id", b"0")) != session:
        return None
    offset = int(replies[1] or b"0")
    now = int(time.time() * 1000)
    started = int(state[b"started"])
    board = cast(
        list[tuple[bytes, float]],
        await r.zrevrange(keys.room_session_top(room), 0, 9, withscores=True),
    )
    names = await r.hmget(keys.room_names(room), [u for u, _ in board]) if board else []
    return {
        "t": "session_summary",
        "room": room,
        "session": session,
        "live": True,
        "started": started,
        "duration_ms": max(now - started, 1),
        "diamonds": int(state.get(b"diamonds", b"0")),
        "coins": int(state.get(b"coins", b"0")),
        "gifts": int(state.get(b"gifts", b"0")),
        "gifts_by_kind": [
            {"gift": text(g), "count": int(c)}
            for g, c in (await read_hash(r, keys.room_session_gifts(room))).items()
        ],
        "top_gifters": [
            {"user": text(u), "name": text(n) if n else text(u), "coins": int(c)}
            for (u, c), n in zip(board, names, strict=True)
        ],
        "peak_viewers": int(state.get(b"peak", b"0")),
        "offset": offset,
    }


async def sweep_presence(r: Redis, worker: str) -> None:
    """Recount every live room, dropping the expired shares of workers that died (a room that no
    live worker serves is recounted by nobody else)."""
    for room in cast(list[bytes], await r.zrange(keys.LIVE_ROOMS, 0, -1)):
        await update_presence(r, text(room), worker, 0, 0)


async def update_presence(r: Redis, room: str, worker: str, members: int, expires_ms: int) -> int:
    """Record this worker's member count in the room; returns the room's viewer count."""
    reply = await fcall(
        r,
        "giftstream_presence",
        [keys.room(room), keys.room_presence(room), keys.room_session(room)],
        [worker, members, expires_ms, keys.room_channel(room)],
    )
    return int(reply[1])


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
        region=h.get(b"region", b"").decode(),
        session=int(h.get(b"session", b"0")),
        host_name=h.get(b"host_name", b"").decode(),
        battle=h.get(b"battle", b"").decode(),
    )


async def room_state(r: Redis, room: str) -> RoomState | None:
    h = await read_hash(r, keys.room(room))
    if not h or b"host" not in h:
        return None
    return _state(room, h)


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


async def publish(r: Redis, room: str, frames: list[dict[str, Any]]) -> None:
    """Send live-only frames (not kept in the history, e.g. `presence`) to every worker with
    members in the room."""
    await r.spublish(keys.room_channel(room), msgpack.packb(frames))
