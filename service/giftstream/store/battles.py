"""LIVE battles in the store: the battle's slot {b:<id>}, the rooms' links to it, the score
outboxes, and the steps that end a battle. See store/functions/battles.lua for the states.

Every step is idempotent, so a worker or relay that dies between two of them leaves a battle
that the next relay pass (any worker's) takes on from where it was: scores are counted once by
event id, and an ending battle is finished and announced from the due set `BATTLES_OPEN`.

One module (~360 lines): a battle's steps hand on to one another over the same keys.
"""

import logging
import secrets
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Commands, Redis, fcall, read_hash, refusal, text
from giftstream.store.pipeline import AutoPipeline

log = logging.getLogger(__name__)

# Battles the relay looks at per pass (the rest wait for the next one).
BATTLES_PER_PASS = 1000
OPEN_STATES = frozenset({"invited", "live", "ending"})


def new_battle_id() -> str:
    return "b" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Battle:
    id: str
    state: str
    rooms: list[str]
    hosts: list[str]
    duration_ms: int
    expires_at: int
    started_at: int
    ends_at: int
    scores: dict[str, int]
    accepted: set[str]
    reason: str
    result: dict[str, Any] | None

    def side_of(self, room: str | None) -> bool:
        return room is not None and room in self.rooms


async def read(r: Redis, battle_id: str) -> Battle | None:
    h = await read_hash(r, keys.battle(battle_id))
    if not h:
        return None
    scores = await read_hash(r, keys.battle_scores(battle_id))
    accepted = cast(set[bytes], await r.smembers(keys.battle_accepted(battle_id)))
    result = h.get(b"result")
    return Battle(
        id=battle_id,
        state=text(h[b"state"]),
        rooms=text(h[b"rooms"]).split(","),
        hosts=text(h[b"hosts"]).split(","),
        duration_ms=int(h[b"duration_ms"]),
        expires_at=int(h.get(b"expires_at", b"0")),
        started_at=int(h.get(b"started_at", b"0")),
        ends_at=int(h.get(b"ends_at", b"0")),
        scores={text(k): int(v) for k, v in scores.items()},
        accepted={text(a) for a in accepted},
        reason=text(h.get(b"reason", b"")),
        result=msgpack.unpackb(result, raw=False) if result else None,
    )


def frame(b: Battle, now_ms: int) -> dict[str, Any]:
    """The `battle` frame of the battle as it stands (its result once it ended)."""
    if b.result is not None:
        return b.result
    state = "started" if b.state == "live" else b.state
    out: dict[str, Any] = {
        "t": "battle",
        "state": state,
        "battle": b.id,
        "sides": [
            {"room": room, "host": host, "score": b.scores.get(room, 0)}
            for room, host in zip(b.rooms, b.hosts, strict=True)
        ],
        "duration_s": b.duration_ms // 1000,
    }
    if b.state == "invited":
        out["accepted"] = sorted(b.accepted)
        out["expires_at"] = b.expires_at
    elif b.state == "declined":
        out["reason"] = b.reason
    else:
        out["started_at"] = b.started_at
        out["ends_at"] = b.ends_at
        out["left_s"] = max(0, -(-(b.ends_at - now_ms) // 1000))
    return out


async def publish(r: Redis, rooms: list[str], frame_: dict[str, Any]) -> None:
    """The frame to every member of every room (each room's own channel, on its slot)."""
    packed = msgpack.packb([frame_])
    for room in rooms:
        await r.spublish(keys.room_channel(room), packed)


async def create(
    r: Redis,
    battle_id: str,
    rooms: list[str],
    hosts: list[str],
    duration_ms: int,
    invite_ttl_ms: int,
    top_gifters: int,
    keep_ms: int,
) -> int:
    """Create an invited battle and put it on the due set; returns when the invite expires."""
    reply = await fcall(
        r,
        "giftstream_battle_create",
        [keys.battle(battle_id), keys.battle_accepted(battle_id)],
        [
            battle_id,
            ",".join(rooms),
            ",".join(hosts),
            duration_ms,
            invite_ttl_ms,
            top_gifters,
            keep_ms,
        ],
    )
    if reply[0] != b"ok":
        raise refusal(reply)
    expires_at = int(reply[1])
    await r.zadd(keys.BATTLES_OPEN, {battle_id: expires_at})
    return expires_at


async def link(r: Redis, room: str, battle_id: str) -> None:
    """Put the room in the battle: refused (in_battle | room_not_live | not_found) when it is
    in another battle (one still open: a link left by a battle that is over is cleared first),
    not live, or not there."""
    reply = await fcall(r, "giftstream_battle_link", [keys.room(room)], [battle_id])
    if reply[0] == b"in_battle" and await _clear_stale_link(r, room):
        reply = await fcall(r, "giftstream_battle_link", [keys.room(room)], [battle_id])
    if reply[0] != b"ok":
        raise refusal(reply)


async def take_invite(r: Redis, room: str, per_min: int, burst: int) -> None:
    """Take a token of the room's invites; refused (rate_limited, with the wait in ms) when
    there is none."""
    bucket = [keys.room_invites(room)]
    reply = await fcall(r, "giftstream_battle_invite_token", bucket, [per_min, burst])
    if reply[0] != b"ok":
        raise refusal(reply)


async def busy(r: Redis, room: str) -> bool:
    """Whether the room is in a battle that is not over."""
    linked = await r.hget(keys.room(room), "battle")
    if linked is None:
        return False
    state = await r.hget(keys.battle(text(linked)), "state")
    return state is not None and text(state) in OPEN_STATES


async def _clear_stale_link(r: Redis, room: str) -> bool:
    """Unlink the room from a battle that is over or was never made (a crash between the
    steps); True if it did."""
    linked = await r.hget(keys.room(room), "battle")
    if linked is None:
        return True
    if await busy(r, room):
        return False
    await unlink(r, room, text(linked))
    return True


async def unlink(r: Redis, room: str, battle_id: str) -> None:
    await fcall(r, "giftstream_battle_unlink", [keys.room(room)], [battle_id])


async def battle_of(r: Redis, room: str) -> str | None:
    linked = await r.hget(keys.room(room), "battle")
    return text(linked) if linked is not None else None


async def accept(r: Redis, battle_id: str, room: str) -> tuple[bool, int]:
    """Record the room's accept; (whether the battle started now, when it ends)."""
    reply = await fcall(
        r,
        "giftstream_battle_accept",
        [keys.battle(battle_id), keys.battle_accepted(battle_id)],
        [room],
    )
    if reply[0] != b"ok":
        raise refusal(reply)  # not_found | not_side | battle_over
    started, ends_at = bool(int(reply[1])), int(reply[3])
    if started:
        await r.zadd(keys.BATTLES_OPEN, {battle_id: ends_at})
    return started, ends_at


async def decline(r: Redis, battle_id: str, room: str) -> None:
    """Decline the invite ('' : it expired), then free every room and announce it."""
    reply = await fcall(
        r,
        "giftstream_battle_decline",
        [keys.battle(battle_id), keys.battle_accepted(battle_id)],
        [room],
    )
    if reply[0] != b"ok":
        raise refusal(reply)  # not_found | not_side | battle_over
    await _close_declined(r, battle_id)


async def _close_declined(r: Redis, battle_id: str) -> None:
    b = await read(r, battle_id)
    if b is None:
        return
    for room in b.rooms:
        await unlink(r, room, battle_id)
        await count_scores(r, room)  # gifts while it was invited: they score nothing, go
    await publish(r, b.rooms, frame(b, 0))
    await r.zrem(keys.BATTLES_OPEN, battle_id)


async def score(r: Commands, packed: bytes) -> str | None:
    """Count one score of a room's score outbox in its battle (once), then remove it from the
    outbox; the battle's id when it counted (None: counted before, or outside the battle)."""
    p = msgpack.unpackb(packed, raw=False)
    battle_id, room, event = str(p["battle"]), str(p["room"]), str(p["event"])
    reply = await fcall(
        r,
        "giftstream_battle_score",
        [
            keys.battle(battle_id),
            keys.battle_scores(battle_id),
            keys.battle_scored(battle_id),
            keys.battle_top(battle_id, room),
            keys.battle_names(battle_id),
        ],
        [event, room, p["from"], p["from_name"], int(p["coins"]), int(p["ts"])],
    )
    if isinstance(r, AutoPipeline):  # the gift path: nobody waits for the tidying
        r.defer("HDEL", keys.room_battle_scores(room), event)
    else:
        await r.execute_command("HDEL", keys.room_battle_scores(room), event)
    return battle_id if int(reply[1]) else None


async def count_scores(r: Redis, room: str) -> set[str]:
    """Count every score waiting in the room's outbox; the battles whose scores changed."""
    changed: set[str] = set()
    for packed in cast(list[bytes], await r.hvals(keys.room_battle_scores(room))):
        counted = await score(r, packed)
        if counted is not None:
            changed.add(counted)
    return changed


async def announce_score(r: Redis, battle_id: str, now_ms: int) -> None:
    """A `battle_score` frame with every side's score, to every room of the battle (lossy: the
    hub merges them per tick, and a lost one is made good by the next or by the end)."""
    b = await read(r, battle_id)
    if b is None or b.state not in ("live", "ending"):
        return
    out = frame(b, now_ms)
    out["t"] = "battle_score"
    del out["state"]
    await publish(r, b.rooms, out)


async def stop(r: Redis, battle_id: str, reason: str, forfeit: str = "") -> None:
    """End the scoring now (refused with battle_over before the start); finish() follows."""
    reply = await fcall(r, "giftstream_battle_stop", [keys.battle(battle_id)], [reason, forfeit])
    if reply[0] != b"ok":
        raise refusal(reply)  # not_found | battle_over
    await r.zadd(keys.BATTLES_OPEN, {battle_id: 0})


async def finish(r: Redis, battle_id: str) -> dict[str, Any] | None:
    """Finish an ending battle: free its rooms, count what their outboxes still hold, decide
    the winner, and announce the `ended` frame (lossless) to every room. Idempotent: run again
    after a crash, it ends the same way."""
    b = await read(r, battle_id)
    if b is None or b.state not in ("ending", "ended"):
        return None
    for room in b.rooms:
        await unlink(r, room, battle_id)
    for room in b.rooms:
        await count_scores(r, room)
    reply = await fcall(
        r,
        "giftstream_battle_finish",
        [
            keys.battle(battle_id),
            keys.battle_scores(battle_id),
            keys.battle_names(battle_id),
            keys.battle_scored(battle_id),
            keys.battle_accepted(battle_id),
            *(keys.battle_top(battle_id, room) for room in b.rooms),
        ],
        [],
    )
    if reply[0] not in (b"ok", b"settled"):
        raise refusal(reply)
    result: dict[str, Any] = msgpack.unpackb(reply[1], raw=False)
    if not await r.hexists(keys.battle(battle_id), "announced"):
        await publish(r, b.rooms, result)
        await r.hset(keys.battle(battle_id), "announced", "1")
    await r.zrem(keys.BATTLES_OPEN, battle_id)
    return result


async def sweep(r: Redis, now_ms: int, grace_ms: int) -> int:
    """The relay's pass over the open battles: count the scores a dead worker left behind
    (older than `grace_ms`), forfeit a battle whose room is no longer live, end the battles
    whose time is up, finish those left ending, and expire invites. Returns how many battles
    ended or expired."""
    done = 0
    open_ = cast(
        list[tuple[bytes, float]],
        await r.zrange(keys.BATTLES_OPEN, 0, BATTLES_PER_PASS - 1, withscores=True),
    )
    for member, due in open_:
        battle_id = text(member)
        try:
            done += await _sweep_one(r, battle_id, int(due), now_ms, grace_ms)
        except Exception:  # one battle's failure must not stop the others'
            log.exception("relay pass over battle %s failed", battle_id)
    return done


async def _sweep_one(r: Redis, battle_id: str, due: int, now_ms: int, grace_ms: int) -> int:
    b = await read(r, battle_id)
    if b is None or b.state in ("ended", "declined"):
        if b is not None and b.state == "ended":
            await finish(r, battle_id)  # announce, if a crash came before it
        else:
            await r.zrem(keys.BATTLES_OPEN, battle_id)
        return 0
    if b.state == "invited":
        if due <= now_ms:
            await decline(r, battle_id, "")
            return 1
        return 0
    if b.state == "live":
        for room in b.rooms:
            if await _left_over_scores(r, room, now_ms - grace_ms):
                await count_scores(r, room)
                await announce_score(r, battle_id, now_ms)
            if await r.hget(keys.room(room), "live") != b"1":
                await stop(r, battle_id, "forfeit", room)
                break
        else:
            if b.ends_at > now_ms:
                return 0
            await stop(r, battle_id, "time")
    await finish(r, battle_id)
    return 1


async def _left_over_scores(r: Redis, room: str, older_than_ms: int) -> bool:
    """Whether the room's score outbox holds a score credited before `older_than_ms` (one the
    live path should have counted by now)."""
    for packed in cast(list[bytes], await r.hvals(keys.room_battle_scores(room))):
        if int(msgpack.unpackb(packed, raw=False)["ts"]) <= older_than_ms:
            return True
    return False
