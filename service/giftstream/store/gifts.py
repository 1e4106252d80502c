"""The two halves of a gift: debit on the viewer's slot, credit on the room's slot."""

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import msgpack

from giftstream.domain.catalog import DiamondRate, Gift
from giftstream.store import keys
from giftstream.store.connection import Commands, Redis, fcall, refusal
from giftstream.store.pipeline import AutoPipeline


@dataclass(frozen=True, slots=True)
class DebitRequest:
    request_id: str
    fingerprint: str
    event: str
    viewer: str
    viewer_name: str
    room: str
    host: str
    gift: Gift
    count: int
    cost: int
    video: str | None = None


@dataclass(frozen=True, slots=True)
class Debited:
    event: str
    balance: int
    # The outbox entry still to credit; None when a replayed gift was credited already.
    payload: bytes | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class Credited:
    gift_offset: int
    credit_offset: int
    diamonds: int
    total: int
    duplicate: bool
    # The gift's score, left in the room's score outbox when the room is in a battle.
    score: bytes | None = None


@dataclass(frozen=True, slots=True)
class DebitRules:
    idempotency_ttl_s: int
    streak_timeout_ms: int
    gifts_per_s: float
    gift_burst: int
    filter_bits: int
    # The rules as giftstream_gift_debit takes them: packed once, sent with every debit.
    packed: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rules = [
            self.idempotency_ttl_s,
            self.streak_timeout_ms,
            self.gifts_per_s,
            self.gift_burst,
            self.filter_bits,
        ]
        object.__setattr__(self, "packed", msgpack.packb(rules))


def fingerprint_hash(fingerprint: str) -> str:
    """The hash of a request's content that its stored answer and its ledger entry keep (as
    gifts.lua computes it)."""
    return hashlib.sha1(fingerprint.encode()).hexdigest()[:16]


async def debit(
    r: Commands, req: DebitRequest, rules: DebitRules, checked: bool = False
) -> Debited | None:
    """Debit the gift, or the original answer of its id; None when Valkey no longer holds the
    id's answer but its filter may have seen the id: the ledger of record tells (then, if it
    has no entry of the id, debit again with `checked`)."""
    reply = await fcall(
        r,
        "giftstream_gift_debit",
        [
            keys.account(req.viewer),
            keys.gift_request(req.viewer, req.request_id),
            keys.user_ledger(req.viewer),
            keys.outbox(req.viewer),
            keys.streak(req.viewer),
            keys.daily(req.viewer),
            keys.gift_bucket(req.viewer),
            keys.pending_outboxes(req.viewer),
            *keys.gift_filters(req.viewer),
        ],
        [
            msgpack.packb(
                [
                    req.request_id,
                    req.fingerprint,
                    req.event,
                    req.cost,
                    req.viewer,
                    req.room,
                    req.host,
                    req.gift.id,
                    req.gift.name,
                    req.count,
                    req.gift.streakable and req.video is None,
                    req.viewer_name,
                    req.video or "",
                    checked,
                ]
            ),
            rules.packed,
        ],
    )
    status = reply[0]
    if status == b"ok":
        return Debited(reply[1].decode(), int(reply[2]), bytes(reply[3]), replayed=False)
    if status == b"replay":
        payload = bytes(reply[3]) if reply[3] is not None else None
        return Debited(reply[1].decode(), int(reply[2]), payload, replayed=True)
    if status == b"cold":
        return None
    # insufficient (balance), spending_limit (cap, spent today), rate_limited (retry after ms),
    # conflict, frozen, no_user.
    raise refusal(reply)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    event: str
    balance: int


async def stored_answer(
    r: Redis, user: str, request_id: str, fingerprint: str, rules: DebitRules
) -> StoredAnswer | Literal["new", "cold"]:
    """The stored answer to a gift request id, to answer a retry that can no longer be debited
    (its room ended, or it comes from a connection that has not joined); "new" if the id was
    never seen, "cold" if only the ledger of record can tell. Raises IdempotencyConflict (as a
    refusal) when the id was used with other content."""
    reply = await fcall(
        r,
        "giftstream_gift_answer",
        [keys.gift_request(user, request_id), *keys.gift_filters(user)],
        [request_id, fingerprint, rules.filter_bits, rules.idempotency_ttl_s],
    )
    status = reply[0]
    if status == b"replay":
        return StoredAnswer(reply[1].decode(), int(reply[2]))
    if status == b"new":
        return "new"
    if status == b"cold":
        return "cold"
    raise refusal(reply)


@dataclass(frozen=True, slots=True)
class CreditRules:
    """How a credit is made: the diamond rate, and the settings of history and boards."""

    rate: DiamondRate
    history_max: int
    supporter_coins: int
    big_gift_coins: int
    leaderboard_size: int
    # The rules as giftstream_gift_credit takes them: packed once, sent with every credit.
    packed: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rules = [
            self.rate.numerator,
            self.rate.denominator,
            self.history_max,
            self.supporter_coins,
            self.big_gift_coins,
            self.leaderboard_size,
        ]
        object.__setattr__(self, "packed", msgpack.packb(rules))


async def credit(r: Commands, room: str, payload: bytes, rules: CreditRules) -> Credited:
    reply = await fcall(
        r,
        "giftstream_gift_credit",
        [
            keys.room(room),
            keys.room_credited(room),
            keys.room_events(room),
            keys.room_ledger(room),
            keys.room_session(room),
            keys.room_session_gifts(room),
            keys.room_session_top(room),
            keys.room_top(room),
            keys.room_names(room),
            keys.room_battle_scores(room),
        ],
        [payload, keys.room_channel(room), rules.packed],
    )
    if reply[0] == b"no_room":
        raise refusal(reply)
    score = bytes(reply[5]) if len(reply) > 5 and reply[5] is not None else None
    return Credited(
        int(reply[1]),
        int(reply[2]),
        int(reply[3]),
        int(reply[4]),
        duplicate=reply[0] == b"dup",
        score=score,
    )


async def settle(r: Commands, user: str, *events: str) -> None:
    """Remove credited entries (gifts, chests) from the user's outbox, and the user from the
    pending index once nothing is left; with no events, only that tidying."""
    await fcall(r, "giftstream_outbox_settle", _outbox_keys(user), [user, *events])


def settle_later(pipeline: AutoPipeline, viewer: str, event: str) -> None:
    """Settle with the next pipeline: until then the entry is a pending credit that the relay
    would find credited already (harmless), so nobody waits for this."""
    outbox_keys = _outbox_keys(viewer)
    pipeline.defer(
        "FCALL", "giftstream_outbox_settle", len(outbox_keys), *outbox_keys, viewer, event
    )


def _outbox_keys(user: str) -> list[str]:
    return [keys.outbox(user), keys.pending_outboxes(user)]
