"""LIVE battles: the rules (who may invite, accept, decline and end; 2-4 sides; the duration's
bounds) and the errors in the caller's words. Shared by the HTTP routes and the WebSocket
requests; the store's steps are in store/battles.py.

A battle's sides are live rooms; a host acts for its own room. A room is in at most one battle
(the inviter's from the invite, the others' from their accept).
"""

import asyncio
import logging
import time
from typing import Any

from giftstream import metrics
from giftstream.errors import (
    ErrorCode,
    Forbidden,
    InvalidField,
    NotFound,
    Refused,
    RoomNotLive,
)
from giftstream.settings import Settings
from giftstream.store import battles, rooms
from giftstream.store.accounts import Account
from giftstream.store.connection import STORE_UNAVAILABLE, Commands, Redis
from giftstream.store.relay import store_time_ms
from giftstream.wire.requests import BattleInvite

log = logging.getLogger(__name__)


class Battles:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    def _own_room(self, account: Account) -> str:
        if account.room is None:
            raise Forbidden("only a host with a live room can battle: go live first")
        return account.room

    async def invite(self, account: Account, invite: BattleInvite) -> dict[str, Any]:
        """Invite other live hosts' rooms to a battle with the caller's room."""
        s = self.settings
        own = self._own_room(account)
        duration = invite.duration_s if invite.duration_s is not None else s.battle_duration_s
        if not s.battle_min_duration_s <= duration <= s.battle_max_duration_s:
            raise InvalidField(
                f"'duration_s' must be from {s.battle_min_duration_s} to"
                f" {s.battle_max_duration_s} seconds"
            )
        sides = [own, *invite.rooms]
        if len(set(sides)) != len(sides):
            raise InvalidField("each room may be a side once, and not your own room again")
        hosts = []
        for room in sides:
            state = await rooms.room_state(self.redis, room)
            if state is None:
                raise NotFound(f"there is no room '{room}'")
            if not state.live:
                raise RoomNotLive(f"room '{room}' is not live")
            if room != own and await battles.busy(self.redis, room):
                raise Refused("in_battle").said(
                    {ErrorCode.IN_BATTLE: f"room '{room}' is already in a battle"}
                )
            hosts.append(state.host)
        await self._take_invite(own)
        battle_id = battles.new_battle_id()
        try:
            await battles.link(self.redis, own, battle_id)
        except Refused as e:
            raise e.said(
                {
                    ErrorCode.IN_BATTLE: "your room is already in a battle",
                    ErrorCode.ROOM_NOT_LIVE: f"your room '{own}' is not live",
                }
            ) from e
        await battles.create(
            self.redis,
            battle_id,
            sides,
            hosts,
            duration * 1000,
            s.battle_invite_ttl_s * 1000,
            s.battle_top_gifters,
            s.battle_keep_s * 1000,
        )
        return await self._announced(battle_id)

    async def _take_invite(self, room: str) -> None:
        s = self.settings
        try:
            await battles.take_invite(
                self.redis, room, s.battle_invites_per_min, s.battle_invite_burst
            )
        except Refused as e:
            metrics.LIMITED.labels("battle_invite").inc()
            raise e.said(
                {
                    ErrorCode.RATE_LIMITED: (
                        f"too many battle invites: try again in {-(-e.value // 1000)} s"
                        f" (at most {s.battle_invite_burst} at once, then"
                        f" {s.battle_invites_per_min} a minute)"
                    )
                }
            ) from e

    async def _battle(self, battle_id: str) -> battles.Battle:
        b = await battles.read(self.redis, battle_id)
        if b is None:
            raise NotFound(f"there is no battle '{battle_id}'")
        return b

    async def view(self, battle_id: str) -> dict[str, Any]:
        return battles.frame(await self._battle(battle_id), await store_time_ms(self.redis))

    async def _announced(self, battle_id: str) -> dict[str, Any]:
        """The battle's frame, also published to every room of it."""
        b = await self._battle(battle_id)
        frame = battles.frame(b, await store_time_ms(self.redis))
        await battles.publish(self.redis, b.rooms, frame)
        return frame

    def _said(self, e: Refused, battle_id: str) -> Exception:
        return e.said(
            {
                ErrorCode.NOT_FOUND: f"there is no battle '{battle_id}'",
                ErrorCode.NOT_IN_BATTLE: f"your room is not a side of battle '{battle_id}'",
                ErrorCode.BATTLE_OVER: f"battle '{battle_id}' is no longer open to this",
                ErrorCode.IN_BATTLE: "your room is already in another battle",
                ErrorCode.ROOM_NOT_LIVE: "your room is not live",
            }
        )

    async def accept(self, account: Account, battle_id: str) -> dict[str, Any]:
        own = self._own_room(account)
        b = await self._battle(battle_id)
        if not b.side_of(own):
            raise Refused("not_side").said(
                {ErrorCode.NOT_IN_BATTLE: f"your room is not a side of battle '{battle_id}'"}
            )
        if b.state != "invited":
            raise self._said(Refused("battle_over"), battle_id)
        try:
            await battles.link(self.redis, own, battle_id)
            try:
                await battles.accept(self.redis, battle_id, own)
            except Refused:
                await battles.unlink(self.redis, own, battle_id)
                raise
        except Refused as e:
            raise self._said(e, battle_id) from e
        return await self._announced(battle_id)

    async def decline(self, account: Account, battle_id: str) -> dict[str, Any]:
        own = self._own_room(account)
        try:
            await battles.decline(self.redis, battle_id, own)
        except Refused as e:
            raise self._said(e, battle_id) from e
        return await self.view(battle_id)

    async def end(self, account: Account, battle_id: str) -> dict[str, Any]:
        """End early, by a host of the battle: the scores so far stand."""
        own = self._own_room(account)
        b = await self._battle(battle_id)
        if not b.side_of(own):
            raise self._said(Refused("not_side"), battle_id)
        try:
            await battles.stop(self.redis, battle_id, "early")
        except Refused as e:
            raise self._said(e, battle_id) from e
        result = await battles.finish(self.redis, battle_id)
        return result if result is not None else await self.view(battle_id)


async def room_ended(redis: Redis, room: str) -> None:
    """A room that ends its LIVE forfeits its battle (one not started is declined)."""
    battle_id = await battles.battle_of(redis, room)
    if battle_id is None:
        return
    b = await battles.read(redis, battle_id)
    if b is None:
        return
    try:
        if b.state == "invited":
            await battles.decline(redis, battle_id, room)
            return
        await battles.stop(redis, battle_id, "forfeit", room)
    except Refused:  # over already: nothing to forfeit
        return
    await battles.finish(redis, battle_id)


class Scorer:
    """Counts the scores of gifts credited by this worker, through the gift path's pipeline,
    and shows every side the new scores at most once per tick per battle (`battle_score` is
    lossy: only the latest scores matter). If the worker dies first, the relay counts them."""

    def __init__(self, redis: Redis, pipeline: Commands, tick_s: float) -> None:
        self._redis = redis
        self._pipeline = pipeline
        self._tick_s = tick_s
        self._due: dict[str, asyncio.Task[None]] = {}

    async def count(self, score: bytes) -> None:
        try:
            battle_id = await battles.score(self._pipeline, score)
        except STORE_UNAVAILABLE as e:
            # The gift is charged and credited: its ack stands, and the relay counts the score.
            log.warning("counting a battle score failed (%r); the relay will", e)
            return
        if battle_id is not None and battle_id not in self._due:
            self._due[battle_id] = asyncio.create_task(self._announce(battle_id))

    async def _announce(self, battle_id: str) -> None:
        try:
            await asyncio.sleep(self._tick_s)  # the scores of this tick's gifts in one frame
            await battles.announce_score(self._redis, battle_id, int(time.time() * 1000))
        except Exception as e:  # lossy: the next score or the end shows the scores
            log.warning("showing the scores of battle %s failed (%s)", battle_id, e)
        finally:
            del self._due[battle_id]

    async def aclose(self) -> None:
        for task in list(self._due.values()):
            task.cancel()
        await asyncio.gather(*self._due.values(), return_exceptions=True)
