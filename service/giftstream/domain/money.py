"""Money arithmetic: integers only, and no unit lost to rounding."""

from giftstream.domain.catalog import DiamondRate, Gift

# Lua numbers are doubles: every amount the Functions handle must stay below 2**53.
MAX_EXACT = 2**53 - 1


def gift_cost(gift: Gift, count: int) -> int:
    """Coins charged for `count` of `gift`."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return gift.coins * count


def diamonds_for(coins: int, carry: int, rate: DiamondRate) -> tuple[int, int]:
    """Diamonds for a gift of `coins`, given the host's carried remainder.

    Returns (diamonds, new carry). The carry is in units of 1/denominator diamond, so the sum of
    all diamonds credited plus carry/denominator equals coins * rate exactly.
    Mirrored by `giftstream_gift_credit` in store/functions/gifts.lua.
    """
    units = coins * rate.numerator + carry
    return units // rate.denominator, units % rate.denominator
