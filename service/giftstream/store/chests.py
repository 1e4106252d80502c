"""Treasure chests: fund (dropper's slot), create, claim and settle (room slot), pay (each
claimant's slot). See store/functions/chests.lua for the split rule."""

import secrets
from dataclasses import dataclass
from typing import cast

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Redis, fcall, refusal, text
from giftstream.store.gifts import settle


@dataclass(frozen=True, slots=True)
class Window:
    """When a chest opens and when its claims close (ms since 1970, the store's clock)."""

    opens_at: int
    closes_at: int


@dataclass(frozen=True, slots=True)
class Funded:
    chest: str
    balance: int
    payload: bytes | None
    replayed: bool


def new_chest_id() -> str:
    return "c" + secrets.token_hex(8)


def _user_keys(user: str) -> list[str]:
    return [
        keys.account(user),
        keys.records(user),
        keys.user_ledger(user),
        keys.outbox(user),
        keys.pending_outboxes(user),
    ]


async def fund(
    r: Redis,
    user: str,
    name: str,
    request_id: str,
    room: str,
    coins: int,
    countdown_ms: int,
    claim_ms: int,
) -> Funded:
    reply = await fcall(
        r,
        "giftstream_chest_fund",
        _user_keys(user),
        [request_id, new_chest_id(), room, coins, name, countdown_ms, claim_ms],
    )
    status = reply[0]
    if status in (b"ok", b"replay"):
        payload = bytes(reply[3]) if reply[3] is not None else None
        return Funded(text(reply[1]), int(reply[2]), payload, status == b"replay")
    raise refusal(reply)  # conflict | insufficient (balance) | frozen | no_user


async def create(r: Redis, payload: bytes) -> Window:
    """Create the chest in its room (idempotent) and put it on the list of chests to settle."""
    p = msgpack.unpackb(payload, raw=False)
    room, chest = str(p["room"]), str(p["chest"])
    reply = await fcall(
        r,
        "giftstream_chest_create",
        [keys.room(room), keys.chest(room, chest)],
        [payload, keys.room_channel(room)],
    )
    if reply[0] == b"no_room":
        raise refusal(reply)
    await r.zadd(keys.CHESTS_DUE, {f"{room} {chest}": int(p["closes_at"])})
    await settle(r, str(p["from"]), chest)
    return Window(int(p["opens_at"]), int(p["closes_at"]))


async def window(r: Redis, room: str, chest: str) -> Window | None:
    """When a created chest opens and closes; None if it is not (or no longer) there."""
    opens, closes = await r.hmget(keys.chest(room, chest), ["opens_at", "closes_at"])
    if opens is None or closes is None:
        return None
    return Window(int(opens), int(closes))


async def claim(r: Redis, room: str, chest: str, user: str, name: str, joined_ms: int) -> int:
    reply = await fcall(
        r,
        "giftstream_chest_claim",
        [keys.chest(room, chest), keys.chest_claimants(room, chest), keys.room_names(room)],
        [user, name, joined_ms],
    )
    if reply[0] == b"ok":
        return int(reply[1])
    # not_found | not_open (opening time) | closed | not_present | already (claim order) |
    # own_chest
    raise refusal(reply)


async def settle_and_pay(r: Redis, room: str, chest: str) -> bool:
    """Settle a chest whose claim window closed and pay everyone; True once fully paid.
    Every step is idempotent, so a pass interrupted by a crash is simply run again."""
    reply = await fcall(
        r,
        "giftstream_chest_settle",
        [
            keys.chest(room, chest),
            keys.chest_claimants(room, chest),
            keys.chest_plan(room, chest),
            keys.room_names(room),
        ],
        [keys.room_channel(room)],
    )
    if reply[0] in (b"not_due", b"not_found"):
        return bool(reply[0] == b"not_found")
    flat = reply[1]
    # The dropper cannot claim: a payment to it is the return of an unclaimed chest.
    dropper = text(await r.hget(keys.chest(room, chest), "from") or b"")
    for user_raw, coins in zip(flat[::2], flat[1::2], strict=True):
        user = text(user_raw)
        kind = "return" if user == dropper else "share"
        await fcall(r, "giftstream_chest_payout", _user_keys(user)[:3], [chest, int(coins), kind])
    await fcall(r, "giftstream_chest_done", [keys.chest(room, chest)], [keys.room_channel(room)])
    return True


async def settle_due(r: Redis, now_ms: int) -> int:
    """Settle and pay every chest whose claim window has closed; returns how many."""
    done = 0
    due = cast(list[bytes], await r.zrangebyscore(keys.CHESTS_DUE, "-inf", now_ms))
    for member in due:
        room, chest = text(member).split(" ")
        if await settle_and_pay(r, room, chest):
            await r.zrem(keys.CHESTS_DUE, member)
            done += 1
    return done
