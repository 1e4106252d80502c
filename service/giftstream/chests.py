"""Treasure chests, after the frame is validated: drop (fund, then create in the room) and claim.

Depends on store only, like gifting and wallet, so any edge can use it. Settling and paying the
chests whose claim window closed is the relay's (store/relay.py).
"""

from dataclasses import dataclass

from giftstream.errors import ErrorCode, GiftstreamError, Refused
from giftstream.gifting import Sender
from giftstream.settings import Settings
from giftstream.store import chests
from giftstream.store.connection import Redis
from giftstream.wire.requests import Claim, DropChest


@dataclass(frozen=True, slots=True)
class Dropped:
    chest: str
    coins: int  # the dropper's balance after the drop
    # When the chest opens and closes (ms); None if its record is gone (settled and expired).
    window: chests.Window | None


def drop_refusal(e: Refused, request: DropChest) -> GiftstreamError:
    """A refused drop in words that name the request."""
    return e.said(
        {
            ErrorCode.INSUFFICIENT_COINS: (
                f"a chest of {request.coins} coins needs more than your {e.value}"
            ),
            ErrorCode.IDEMPOTENCY_CONFLICT: (
                f"the id '{request.id}' was already used for another chest"
            ),
            ErrorCode.FORBIDDEN: "this account is frozen",
            ErrorCode.NOT_FOUND: "your account no longer exists",
        }
    )


def claim_refusal(e: Refused, request: Claim) -> GiftstreamError:
    """A refused claim in words that name the chest."""
    chest = request.chest
    return e.said(
        {
            ErrorCode.CHEST_NOT_OPEN: f"chest '{chest}' is not open yet",
            ErrorCode.CHEST_CLOSED: f"chest '{chest}' can no longer be claimed",
            ErrorCode.ALREADY_CLAIMED: f"you already claimed chest '{chest}'",
            ErrorCode.FORBIDDEN: "you cannot claim your own chest",
            ErrorCode.NOT_FOUND: f"there is no chest '{chest}' in this room",
        }
    )


class Chests:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def drop(self, sender: Sender, request: DropChest) -> Dropped:
        """Charge the sender once for the chest of `request` and create it in the room; a retry
        of the same id is answered as the first time."""
        try:
            funded = await chests.fund(
                self.redis,
                sender.user,
                sender.name,
                request.id,
                request.room,
                request.coins,
                self.settings.chest_countdown_ms,
                self.settings.chest_claim_ms,
            )
        except Refused as e:
            raise drop_refusal(e, request) from e
        if funded.payload is not None:
            # New, or a retry whose creation is still pending: create it now (idempotent).
            window: chests.Window | None = await chests.create(self.redis, funded.payload)
        else:
            window = await chests.window(self.redis, request.room, funded.chest)
        return Dropped(funded.chest, funded.balance, window)

    async def claim(self, sender: Sender, request: Claim, joined_ms: int) -> int:
        """Claim a share of an open chest for a member that joined the room at `joined_ms`;
        the claim's order (1 = first)."""
        try:
            return await chests.claim(
                self.redis, request.room, request.chest, sender.user, sender.name, joined_ms
            )
        except Refused as e:
            raise claim_refusal(e, request) from e
