"""The path of one gift, after the frame is validated: resolve, debit, credit, settle.

Depends on domain and store only, so any edge (WebSocket now, HTTP for video gifts) can use it.
"""

import os
import secrets
from dataclasses import dataclass

import msgpack
import redis.exceptions

from giftstream import battles, metrics
from giftstream.domain.catalog import Catalog
from giftstream.domain.economy import Economy
from giftstream.domain.money import gift_cost
from giftstream.errors import (
    ErrorCode,
    Forbidden,
    IdempotencyConflict,
    Refused,
    Unavailable,
    UnavailableInRegion,
    UnknownGift,
)
from giftstream.settings import Settings
from giftstream.store import gifts, keys
from giftstream.store.connection import Redis
from giftstream.store.ledger import Ledger, LedgerUnreachable
from giftstream.store.pipeline import AutoPipeline
from giftstream.wire.requests import SendGift

CRASH_AFTER_DEBIT = "crash_after_debit"
CRASH_AFTER_CREDIT = "crash_after_credit"
LOSE_DEBIT_REPLY = "lose_debit_reply"


def credit_rules(catalog: Catalog, settings: Settings) -> gifts.CreditRules:
    return gifts.CreditRules(
        rate=catalog.rate,
        # The gift Function's hard bound; the archiver trims to the window once archived.
        history_max=settings.room_history_max + settings.room_history_backlog,
        supporter_coins=settings.supporter_coins,
        big_gift_coins=settings.big_gift_coins,
        leaderboard_size=settings.leaderboard_size,
    )


@dataclass(frozen=True, slots=True)
class Sender:
    user: str
    name: str
    region: str
    age: int


@dataclass(frozen=True, slots=True)
class Ack:
    id: str
    event: str
    coins: int


def new_event_id() -> str:
    return "e" + secrets.token_hex(10)


class Gifting:
    def __init__(
        self, redis: Redis, catalog: Catalog, economy: Economy, settings: Settings, ledger: Ledger
    ) -> None:
        self.redis = redis
        # Answers a retry whose stored answer Valkey no longer holds (two-tier idempotency).
        self.ledger = ledger
        self.pipeline = AutoPipeline(
            redis,
            settings.pipeline_max_in_flight,
            settings.pipeline_max_commands,
            settings.settle_linger_ms / 1000,
        )
        self.scorer = battles.Scorer(redis, self.pipeline, settings.coalesce_tick_ms / 1000)
        self.catalog = catalog
        self.economy = economy
        self.settings = settings
        self.rules = credit_rules(catalog, settings)
        self.debit_rules = gifts.DebitRules(
            idempotency_ttl_s=settings.idempotency_ttl_s,
            streak_timeout_ms=settings.streak_timeout_ms,
            gifts_per_s=settings.gift_rate_per_s,
            gift_burst=settings.gift_burst,
            filter_bits=settings.idempotency_filter_bits,
        )

    async def aclose(self) -> None:
        """Send the commands still queued (settles) before the store client closes."""
        await self.scorer.aclose()
        await self.pipeline.aclose()

    async def send(
        self,
        sender: Sender,
        req: SendGift,
        host: str,
        host_receives: bool = True,
        video: str | None = None,
    ) -> Ack:
        """Charge the sender once for `req` and credit the host (of a live room, or of a video
        when `video` is given); the ack to answer."""
        gift = self.catalog.get(req.gift)
        if gift is None:
            raise UnknownGift(f"there is no gift '{req.gift}'")
        if not gift.available_in(sender.region) or not self.economy.sells_coins_in(sender.region):
            raise UnavailableInRegion(f"{gift.name} cannot be sent from region {sender.region}")
        minimum = self.economy.minimum_age
        if sender.age < minimum:
            raise Forbidden(f"you must be {minimum} or older to send gifts")
        if not host_receives:
            raise Forbidden(f"this host cannot receive gifts (under {minimum})")
        if sender.user == host:
            raise Forbidden("hosts cannot send gifts to themselves")
        debit = gifts.DebitRequest(
            request_id=req.id,
            # A gift to a video is another request than the same gift live in the room.
            fingerprint=req.fingerprint + (f"\x1fvideo:{video}" if video else ""),
            event=new_event_id(),
            viewer=sender.user,
            viewer_name=sender.name,
            room=req.room,
            host=host,
            gift=gift,
            count=req.count,
            cost=gift_cost(gift, req.count),
            video=video,
        )
        try:
            debited = await gifts.debit(self.pipeline, debit, self.debit_rules)
            if debited is None:
                archived = await self._archived_answer(sender, req.id, debit.fingerprint)
                if archived is not None:
                    return archived
                debited = await gifts.debit(self.pipeline, debit, self.debit_rules, checked=True)
                assert debited is not None, "a checked debit skips the filter"
        except Refused as e:
            if e.code is ErrorCode.RATE_LIMITED:
                metrics.LIMITED.labels("gift_rate").inc()
            cap, spent_today = (*e.values, 0, 0)[:2]
            raise e.said(
                {
                    ErrorCode.IDEMPOTENCY_CONFLICT: _conflict(req.id),
                    ErrorCode.INSUFFICIENT_COINS: (
                        f"{debit.cost} coins are needed for {req.count} x {gift.name};"
                        f" the balance is {e.value}"
                    ),
                    ErrorCode.SPENDING_LIMIT: (
                        f"this gift would take today's spending to {spent_today + debit.cost}"
                        f" coins, over your daily limit of {cap}"
                    ),
                    ErrorCode.RATE_LIMITED: (
                        f"too many gifts: try again in {e.value} ms"
                        f" (at most {self.settings.gift_burst} at once, then"
                        f" {self.settings.gift_rate_per_s:g} a second)"
                    ),
                    ErrorCode.FORBIDDEN: "this account is frozen",
                    ErrorCode.NOT_FOUND: "your account no longer exists",
                }
            ) from e
        if CRASH_AFTER_DEBIT in self.settings.faults and not debited.replayed:
            os._exit(70)  # testing only: a worker dying between debit and credit
        if LOSE_DEBIT_REPLY in self.settings.faults and not debited.replayed:
            # Testing only: the debit ran, but its reply was lost with the store's connection.
            raise redis.exceptions.ConnectionError("fault lose_debit_reply")
        if debited.payload is not None:
            credited = await gifts.credit(self.pipeline, req.room, debited.payload, self.rules)
            if CRASH_AFTER_CREDIT in self.settings.faults and credited.score is not None:
                os._exit(70)  # testing only: a worker dying before the battle counts the gift
            gifts.settle_later(self.pipeline, sender.user, debited.event)
            if credited.score is not None:
                await self.scorer.count(credited.score)
            if gift.broadcast and video is None and not debited.replayed:
                await self._announce(
                    sender, req, debited.event, gift.name, gift_cost(gift, req.count)
                )
        return Ack(req.id, debited.event, debited.balance)

    async def _announce(
        self, sender: Sender, req: SendGift, event: str, name: str, coins: int
    ) -> None:
        """A broadcast gift is announced in every live room of the sender's region."""
        frame = {
            "t": "broadcast",
            "region": sender.region,
            "room": req.room,
            "event": event,
            "from": sender.user,
            "from_name": sender.name,
            "gift": req.gift,
            "name": name,
            "count": req.count,
            "coins": coins,
        }
        await self.redis.publish(keys.BROADCAST_CHANNEL, msgpack.packb(frame))

    async def replay_of(self, sender: Sender, req: SendGift) -> Ack | None:
        """The stored ack of a request id already debited, for a retry that can no longer be
        debited here; None if the id is new. Raises IdempotencyConflict on other content."""
        try:
            stored = await gifts.stored_answer(
                self.redis, sender.user, req.id, req.fingerprint, self.debit_rules
            )
        except Refused as e:
            raise e.said({ErrorCode.IDEMPOTENCY_CONFLICT: _conflict(req.id)}) from e
        if stored == "new":
            return None
        if stored == "cold":
            return await self._archived_answer(sender, req.id, req.fingerprint)
        return Ack(req.id, stored.event, stored.balance)

    async def _archived_answer(self, sender: Sender, rid: str, fingerprint: str) -> Ack | None:
        """The original ack of a request id that Valkey no longer holds an answer to but whose
        filter may have seen, from the ledger of record; None if it has no such entry (the
        filter's false positive: the id is new). The gift path waits on PostgreSQL only here."""
        try:
            found = await self.ledger.gift_answer(sender.user, rid)
        except LedgerUnreachable as e:
            metrics.COLD_CHECKS.labels("unreachable").inc()
            raise Unavailable(
                f"whether the gift id '{rid}' was used already cannot be checked now (the"
                " ledger of record is unreachable): re-send the same id to learn the outcome"
            ) from e
        if found is None:
            metrics.COLD_CHECKS.labels("absent").inc()
            return None
        metrics.COLD_CHECKS.labels("archived").inc()
        # An entry archived before hashes were recorded cannot tell: its original answer.
        if found.fingerprint_hash not in (None, gifts.fingerprint_hash(fingerprint)):
            raise IdempotencyConflict(_conflict(rid))
        return Ack(rid, found.event, found.balance)


def _conflict(rid: str) -> str:
    return f"the gift id '{rid}' was already used for a different gift"
