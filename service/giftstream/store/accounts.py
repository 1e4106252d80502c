"""User accounts: creation, coin grants, reading balances."""

from dataclasses import dataclass
from typing import Any

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Redis, fcall, read_hash, refusal, text


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    region: str
    role: str
    age: int
    coins: int
    points: int
    daily_cap: int | None
    guardian_lock: bool
    room: str | None


def _user_keys(user: str) -> list[str]:
    return [keys.account(user), keys.records(user), keys.user_ledger(user)]


async def create_user(
    r: Redis, user: str, name: str, region: str, role: str, coins: int, created_ms: int, age: int
) -> int:
    """Create an account holding `coins` granted for free (dev mode); returns the balance."""
    reply = await fcall(
        r,
        "giftstream_user_create",
        _user_keys(user),
        [user, name, region, role, created_ms, coins, f"create:{user}", age],
    )
    if reply[0] != b"ok":
        raise refusal(reply)
    return int(reply[1])


async def grant_coins(r: Redis, user: str, grant_id: str, coins: int, kind: str) -> int:
    """Add coins, once per grant id; returns the balance."""
    reply = await fcall(r, "giftstream_grant_coins", _user_keys(user), [grant_id, coins, kind])
    if reply[0] not in (b"ok", b"replay"):
        raise refusal(reply)
    return int(reply[1])


async def get_account(r: Redis, user: str) -> Account | None:
    h = await read_hash(r, keys.account(user))
    if b"coins" not in h:
        return None
    cap = h.get(b"daily_cap")
    return Account(
        id=user,
        name=h.get(b"name", user.encode()).decode(),
        region=h.get(b"region", b"").decode(),
        role=h.get(b"role", b"viewer").decode(),
        age=int(h.get(b"age", b"0")),
        coins=int(h[b"coins"]),
        points=int(h.get(b"points", b"0")),
        daily_cap=int(cap) if cap is not None else None,
        guardian_lock=b"guardian" in h,
        room=h[b"room"].decode() if b"room" in h else None,
    )


async def spent_today(r: Redis, user: str, today: int) -> int:
    day, spent = await r.hmget(keys.daily(user), ["day", "spent"])
    return int(spent) if day is not None and spent is not None and int(day) == today else 0


# -- purchases -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    state: str  # paid | pending | declined | replay states (paid, pending, declined, refunded)
    balance: int
    credited: int
    replayed: bool
    settle_at_ms: int = 0


async def purchase(
    r: Redis,
    user: str,
    receipt: str,
    fingerprint: str,
    coins: int,
    bonus: int,
    pending_until_ms: int | None,
    price: str,
    currency: str,
    package: str,
    channel: str,
    region: str,
) -> PurchaseResult:
    state = "pending" if pending_until_ms is not None else "paid"
    reply = await fcall(
        r,
        "giftstream_purchase",
        _user_keys(user),
        [
            receipt,
            fingerprint,
            coins,
            bonus,
            state,
            pending_until_ms or 0,
            price,
            currency,
            package,
            channel,
            region,
        ],
    )
    return _purchase_result(reply)


def _purchase_result(reply: list[Any]) -> PurchaseResult:
    status = reply[0]
    if status == b"ok":
        return PurchaseResult("paid", int(reply[1]), int(reply[2]), replayed=False)
    if status == b"pending":
        return PurchaseResult("pending", 0, 0, replayed=False, settle_at_ms=int(reply[1]))
    if status == b"replay":
        return PurchaseResult(text(reply[3]), int(reply[1]), int(reply[2]), replayed=True)
    if status == b"declined":
        return PurchaseResult("declined", int(reply[1]), 0, replayed=False)
    raise refusal(reply)


async def settle_purchase(r: Redis, user: str, receipt: str, paid: bool) -> PurchaseResult:
    reply = await fcall(
        r, "giftstream_purchase_settle", _user_keys(user), [receipt, "paid" if paid else "declined"]
    )
    return _purchase_result(reply)


async def purchase_record(r: Redis, user: str, receipt: str) -> dict[str, Any] | None:
    raw = await r.hget(keys.records(user), f"purchase:{receipt}")
    if raw is None:
        return None
    record: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    return record


@dataclass(frozen=True, slots=True)
class Refund:
    balance: int
    clawed_back: int
    unrecovered: int
    replayed: bool


async def refund_purchase(r: Redis, user: str, receipt: str) -> Refund:
    reply = await fcall(r, "giftstream_purchase_refund", _user_keys(user), [receipt])
    status = reply[0]
    if status in (b"ok", b"replay"):
        return Refund(int(reply[1]), int(reply[2]), int(reply[3]), replayed=status == b"replay")
    raise refusal(reply)


async def flag(r: Redis, user: str, reason: str, ref: str) -> None:
    await fcall(r, "giftstream_flag", _user_keys(user), [reason, ref])


# -- spending controls -----------------------------------------------------------------------


async def set_limits(
    r: Redis, user: str, daily_cap: int | None, guardian_hash: str, new_guardian_hash: str
) -> None:
    reply = await fcall(
        r,
        "giftstream_set_limits",
        [keys.account(user)],
        ["" if daily_cap is None else daily_cap, guardian_hash, new_guardian_hash],
    )
    if reply[0] != b"ok":
        raise refusal(reply)


# -- reward points ---------------------------------------------------------------------------


async def grant_points(r: Redis, user: str, ref: str, points: int, source: str) -> tuple[int, bool]:
    """Add points once per reference; returns (points balance, whether this call added them)."""
    reply = await fcall(r, "giftstream_points_grant", _user_keys(user), [ref, points, source])
    if reply[0] == b"no_user":
        raise refusal(reply)
    return int(reply[1]), reply[0] == b"ok"


@dataclass(frozen=True, slots=True)
class Exchange:
    coins_balance: int
    points_balance: int
    coins: int
    points: int
    replayed: bool


async def exchange_points(
    r: Redis, user: str, request_id: str, points: int, points_per_coin: int
) -> Exchange:
    reply = await fcall(
        r, "giftstream_points_exchange", _user_keys(user), [request_id, points, points_per_coin]
    )
    status = reply[0]
    if status in (b"ok", b"replay"):
        coins_balance, points_balance, coins, points = (int(x) for x in reply[1:5])
        return Exchange(coins_balance, points_balance, coins, points, status == b"replay")
    raise refusal(reply)


async def set_frozen(r: Redis, user: str, frozen: bool, reason: str) -> None:
    reply = await fcall(
        r, "giftstream_set_frozen", _user_keys(user), ["1" if frozen else "0", reason]
    )
    if reply[0] != b"ok":
        raise refusal(reply)
