"""The money side beyond gifts: recharges, refunds, spending limits, reward points, cash-out.

Each operation checks everything it can before the store is touched, then makes one Function
call on one slot; errors carry the protocol's codes. Depends on domain and store only.

One class (~340 lines): its operations share the store and the limits, each a check then a call.
"""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from giftstream.domain.catalog import DiamondRate
from giftstream.domain.economy import Economy, PriceError, Quote, UnsoldRegion
from giftstream.domain.money import diamonds_for
from giftstream.errors import (
    BelowMinimum,
    ErrorCode,
    Forbidden,
    IdempotencyConflict,
    InvalidField,
    NotFound,
    PaymentDeclined,
    Refused,
    UnavailableInRegion,
)
from giftstream.payments import Outcome, Verdict
from giftstream.store import accounts, earnings, keys
from giftstream.store.accounts import Account
from giftstream.store.connection import Redis, text

DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Recharge:
    state: str  # paid | pending
    balance: int
    credited: int
    quote: Quote
    receipt: str
    replayed: bool

    def public(self) -> dict[str, Any]:
        return {
            "receipt": self.receipt,
            "status": self.state,
            "coins": self.balance,
            "credited": self.credited,
            "replayed": self.replayed,
            "purchase": self.quote.public(),
        }


def guardian_hash(user: str, code: str) -> str:
    return hashlib.sha256(f"{user}\x1f{code}".encode()).hexdigest()


class Wallet:
    def __init__(
        self,
        redis: Redis,
        economy: Economy,
        rate: DiamondRate,
        verdict: Callable[[str], Verdict],
    ) -> None:
        self.redis = redis
        self.economy = economy
        self.rate = rate
        self.verdict = verdict

    # -- recharge ----------------------------------------------------------------------------

    def check_adult(self, account: Account, action: str) -> None:
        if account.age < self.economy.minimum_age:
            raise Forbidden(f"you must be {self.economy.minimum_age} or older to {action}")

    async def recharge(
        self,
        account: Account,
        region: str,
        channel: str,
        receipt: str,
        package: str | None,
        coins: int | None,
        now: datetime,
    ) -> Recharge:
        """Buy coins. Checks in order: region match and availability, age, then payment."""
        if region != account.region:
            await accounts.flag(self.redis, account.id, "region_mismatch", receipt)
            raise Forbidden(
                f"purchases must be made in your account's region ({account.region}),"
                f" not {region}; this attempt was flagged"
            )
        if not self.economy.sells_coins_in(region):
            raise UnavailableInRegion(f"coins are not sold in region {region}")
        self.check_adult(account, "buy coins")
        try:
            quote = self.economy.quote(region, channel, now, package=package, coins=coins)
        except UnsoldRegion as e:
            raise UnavailableInRegion(str(e)) from e
        except PriceError as e:
            raise InvalidField(str(e)) from e
        owner = await self._claim_receipt(receipt, account.id)
        if owner != account.id:
            raise IdempotencyConflict("this store receipt belongs to another purchase")
        fingerprint = f"{package or ''}\x1f{coins or ''}\x1f{region}\x1f{channel}"
        verdict = self.verdict(receipt)
        existing = await accounts.purchase_record(self.redis, account.id, receipt)
        if existing is None and verdict.outcome is Outcome.DECLINED:
            raise PaymentDeclined(f"payment declined: {verdict.reason}; nothing was charged")
        late = verdict.outcome is Outcome.LATE
        try:
            result = await accounts.purchase(
                self.redis,
                account.id,
                receipt,
                fingerprint,
                quote.coins,
                quote.bonus,
                now_ms() + self.economy.late_settle_ms if late else None,
                quote.price_text,
                quote.currency,
                package or "custom",
                channel,
                region,
            )
        except Refused as e:
            raise e.said(
                {
                    ErrorCode.IDEMPOTENCY_CONFLICT: (
                        "this store receipt was already used for a different purchase"
                    ),
                    ErrorCode.FORBIDDEN: "this account is frozen",
                }
            ) from e
        if result.state == "pending":
            result = await self._settle_if_due(account.id, receipt) or result
        return Recharge(
            result.state, result.balance, result.credited, quote, receipt, result.replayed
        )

    async def _claim_receipt(self, receipt: str, user: str) -> str:
        """Store receipts are unique: the first user to present one owns it."""
        await self.redis.set(keys.receipt(receipt), user, nx=True)
        owner = await self.redis.get(keys.receipt(receipt))
        return text(owner) if owner is not None else user

    async def _settle_if_due(self, user: str, receipt: str) -> accounts.PurchaseResult | None:
        record = await accounts.purchase_record(self.redis, user, receipt)
        if record is None or record["state"] != "pending":
            return None
        if now_ms() < int(record["settle_at"]):
            return None
        return await accounts.settle_purchase(self.redis, user, receipt, paid=True)

    async def recharge_status(self, account: Account, receipt: str) -> dict[str, Any]:
        """A purchase as it stands; a late payment that is due settles now (once)."""
        record = await accounts.purchase_record(self.redis, account.id, receipt)
        if record is None:
            raise NotFound(f"there is no purchase with receipt '{receipt}'")
        settled = await self._settle_if_due(account.id, receipt)
        if settled is not None:
            record = await accounts.purchase_record(self.redis, account.id, receipt) or record
        fresh = await accounts.get_account(self.redis, account.id)
        return {
            "receipt": receipt,
            "status": record["state"],
            "coins": fresh.coins if fresh else account.coins,
            "credited": int(record.get("credited", 0)),
        }

    async def store_event(self, kind: str, receipt: str) -> dict[str, Any]:
        """A notification from the (simulated) store: 'settled', 'failed' or 'refunded'."""
        owner = await self.redis.get(keys.receipt(receipt))
        if owner is None:
            raise NotFound(f"no purchase has receipt '{receipt}'")
        user = text(owner)
        try:
            if kind == "refunded":
                refund = await accounts.refund_purchase(self.redis, user, receipt)
                return {
                    "receipt": receipt,
                    "status": "refunded",
                    "coins": refund.balance,
                    "clawed_back": refund.clawed_back,
                    "unrecovered": refund.unrecovered,
                    "replayed": refund.replayed,
                }
            result = await accounts.settle_purchase(self.redis, user, receipt, kind == "settled")
        except Refused as e:
            raise e.said(
                {
                    ErrorCode.NOT_FOUND: f"no purchase has receipt '{receipt}'",
                    ErrorCode.INVALID_FIELD: "only a paid purchase can be refunded",
                }
            ) from e
        return {
            "receipt": receipt,
            "status": result.state,
            "coins": result.balance,
            "credited": result.credited,
            "replayed": result.replayed,
        }

    # -- spending limits ---------------------------------------------------------------------

    async def set_limits(
        self,
        account: Account,
        daily_cap: int | None,
        guardian_code: str | None,
        new_guardian_code: str | None,
    ) -> None:
        try:
            await accounts.set_limits(
                self.redis,
                account.id,
                daily_cap,
                guardian_hash(account.id, guardian_code) if guardian_code else "",
                guardian_hash(account.id, new_guardian_code) if new_guardian_code else "",
            )
        except Refused as e:
            raise e.said(
                {
                    ErrorCode.FORBIDDEN: (
                        "a guardian lock is set: raising or removing the limit, or changing the"
                        " lock, needs the guardian's code"
                    )
                }
            ) from e

    async def limits(self, account: Account) -> dict[str, Any]:
        spent = await accounts.spent_today(self.redis, account.id, now_ms() // DAY_MS)
        return {
            "daily_cap": account.daily_cap,
            "spent_today": spent,
            "left_today": None if account.daily_cap is None else max(0, account.daily_cap - spent),
            "guardian_lock": account.guardian_lock,
        }

    # -- reward points -----------------------------------------------------------------------

    async def check_in(self, account: Account) -> dict[str, Any]:
        day = now_ms() // DAY_MS
        points, granted = await accounts.grant_points(
            self.redis,
            account.id,
            f"checkin:{day}",
            self.economy.daily_checkin_points,
            "checkins",
        )
        return {"points": points, "granted": self.economy.daily_checkin_points if granted else 0}

    async def exchange(self, account: Account, request_id: str, points: int) -> dict[str, Any]:
        rate = self.economy.points_per_coin
        try:
            done = await accounts.exchange_points(self.redis, account.id, request_id, points, rate)
        except Refused as e:
            if e.status == "too_few":
                raise InvalidField(f"at least {rate} points make one coin") from e
            raise e.said(
                {
                    ErrorCode.IDEMPOTENCY_CONFLICT: (
                        f"the exchange id '{request_id}' was already used for another amount"
                    ),
                    ErrorCode.INVALID_FIELD: f"you have {e.value} points, fewer than {points}",
                }
            ) from e
        return {
            "coins": done.coins_balance,
            "points": done.points_balance,
            "credited": done.coins,
            "spent_points": done.points,
            "replayed": done.replayed,
        }

    # -- earnings and cash-out ---------------------------------------------------------------

    def estimate(self, coins: int) -> dict[str, Any]:
        diamonds, _ = diamonds_for(coins, 0, self.rate)
        return {
            "coins": coins,
            "diamonds": diamonds,
            "value": f"{self.economy.diamonds_value(diamonds):f}",
            "currency": "USD",
        }

    async def earnings(self, account: Account, diamonds: int) -> dict[str, Any]:
        minimum = self.economy.minimum_payout_diamonds
        return {
            "diamonds": diamonds,
            "value": f"{self.economy.diamonds_value(diamonds):f}",
            "currency": "USD",
            "diamond_value": f"{self.economy.diamond_value_usd:f}",
            "minimum_payout": {
                "diamonds": minimum,
                "value": f"{self.economy.minimum_payout_usd:f}",
            },
            "can_cash_out": diamonds >= minimum,
            "payouts": await earnings.payouts(self.redis, account.room) if account.room else [],
        }

    async def payout(self, account: Account, request_id: str, diamonds: int) -> dict[str, Any]:
        minimum = self.economy.minimum_payout_diamonds
        amount = self.economy.diamonds_value(diamonds)
        if account.room is None:
            raise BelowMinimum(
                f"you have no diamonds yet; the minimum cash-out is {minimum} diamonds"
            )
        try:
            done = await earnings.payout(
                self.redis, account.room, account.id, request_id, diamonds, minimum, f"{amount:f}"
            )
        except Refused as e:
            raise e.said(
                {
                    ErrorCode.IDEMPOTENCY_CONFLICT: (
                        f"the payout id '{request_id}' was already used for another amount"
                    ),
                    ErrorCode.BELOW_MINIMUM: (
                        f"the minimum cash-out is {minimum} diamonds"
                        f" (${self.economy.minimum_payout_usd:f})"
                    ),
                    ErrorCode.INSUFFICIENT_DIAMONDS: (
                        f"you have {e.value} diamonds, fewer than {diamonds}"
                    ),
                    ErrorCode.FORBIDDEN: "only the room's host can cash out its diamonds",
                }
            ) from e
        return {"payout": done.record, "diamonds": done.diamonds_left, "replayed": done.replayed}


def utc_now() -> datetime:
    return datetime.now(UTC)
