"""A host's diamonds: cash-out records, and videos that receive gifts."""

import secrets
from dataclasses import dataclass
from typing import Any

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Redis, fcall, read_hash, refusal


@dataclass(frozen=True, slots=True)
class Payout:
    diamonds_left: int
    record: dict[str, Any]
    replayed: bool


async def payout(
    r: Redis, room: str, host: str, request_id: str, diamonds: int, minimum: int, amount: str
) -> Payout:
    reply = await fcall(
        r,
        "giftstream_payout",
        [keys.room(room), keys.room_payouts(room), keys.room_ledger(room)],
        [request_id, host, diamonds, minimum, amount],
    )
    status = reply[0]
    if status in (b"ok", b"replay"):
        record: dict[str, Any] = msgpack.unpackb(reply[2], raw=False)
        return Payout(int(reply[1]), record, replayed=status == b"replay")
    raise refusal(reply)  # conflict | forbidden | below_minimum | insufficient_diamonds (have)


async def payouts(r: Redis, room: str) -> list[dict[str, Any]]:
    records = [
        msgpack.unpackb(v, raw=False)
        for v in (await read_hash(r, keys.room_payouts(room))).values()
    ]
    return sorted(records, key=lambda rec: int(rec["ts"]))


@dataclass(frozen=True, slots=True)
class Video:
    id: str
    room: str
    host: str


async def create_video(r: Redis, room: str, host: str) -> Video:
    video = Video("v" + secrets.token_hex(6), room, host)
    await r.hset(keys.video(video.id), mapping={"room": room, "host": host})
    return video


async def get_video(r: Redis, video_id: str) -> Video | None:
    h = await read_hash(r, keys.video(video_id))
    if b"room" not in h:
        return None
    return Video(video_id, h[b"room"].decode(), h[b"host"].decode())
