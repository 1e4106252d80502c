"""Money arithmetic: gift cost and diamonds with a carried remainder."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftstream.domain.catalog import DiamondRate, Gift, load_catalog
from giftstream.domain.money import MAX_EXACT, diamonds_for, gift_cost
from giftstream.wire.requests import MAX_GIFT_COUNT

ROSE = Gift(id="rose", name="Rose", coins=1, streakable=True)
UNIVERSE = Gift(id="tiktok_universe", name="TikTok Universe", coins=44_999, broadcast=True)

coin_amounts = st.integers(min_value=1, max_value=44_999 * MAX_GIFT_COUNT)
gift_streams = st.lists(coin_amounts, max_size=200)


def _credit_all(coins: list[int], rate: DiamondRate) -> tuple[list[int], list[int]]:
    """Credit every gift in turn; returns the diamonds of each and the carry after each."""
    carry = 0
    diamonds: list[int] = []
    carries: list[int] = []
    for amount in coins:
        credited, carry = diamonds_for(amount, carry, rate)
        diamonds.append(credited)
        carries.append(carry)
    return diamonds, carries


# --- gift_cost --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gift", "count", "expected"),
    [(ROSE, 1, 1), (ROSE, 17, 17), (UNIVERSE, 1, 44_999), (UNIVERSE, 3, 134_997)],
)
def test_gift_cost_is_unit_price_times_count(gift: Gift, count: int, expected: int) -> None:
    assert gift_cost(gift, count) == expected


@pytest.mark.parametrize("count", [0, -1, -10_000])
def test_gift_cost_rejects_a_count_below_one(count: int) -> None:
    with pytest.raises(ValueError):
        gift_cost(ROSE, count)


def test_most_expensive_bundled_gift_at_max_count_stays_exact_in_lua_doubles() -> None:
    catalog = load_catalog()
    top = max(catalog, key=lambda gift: gift.coins)
    cost = gift_cost(top, MAX_GIFT_COUNT)
    assert cost == top.coins * MAX_GIFT_COUNT
    # The credit Function computes cost * numerator + carry (carry < denominator).
    assert cost * catalog.rate.numerator + catalog.rate.denominator < MAX_EXACT


# --- diamonds_for -----------------------------------------------------------------------------


@given(coins=coin_amounts)
def test_rate_one_to_one_credits_one_diamond_per_coin_with_no_carry(coins: int) -> None:
    assert diamonds_for(coins, 0, DiamondRate(1, 1)) == (coins, 0)


def test_rate_one_half_carries_the_half_diamond_to_the_next_gift() -> None:
    rate = DiamondRate(1, 2)
    assert diamonds_for(1, 0, rate) == (0, 1)
    assert diamonds_for(1, 1, rate) == (1, 0)
    assert diamonds_for(3, 1, rate) == (2, 0)
    assert diamonds_for(3, 0, rate) == (1, 1)


def test_rate_two_thirds_carries_thirds_between_gifts() -> None:
    rate = DiamondRate(2, 3)
    diamonds, carries = _credit_all([1, 1, 1, 1, 1, 1], rate)
    # 2/3, 4/3, 6/3, 8/3, 10/3, 12/3 owed in total: floor of each running total is credited.
    assert diamonds == [0, 1, 1, 0, 1, 1]
    assert carries == [2, 1, 0, 2, 1, 0]


def test_rate_zero_credits_no_diamonds_and_carries_nothing() -> None:
    assert diamonds_for(44_999, 0, DiamondRate(0, 1)) == (0, 0)


@given(coins=gift_streams)
def test_rate_one_to_one_credits_exactly_the_coins_over_many_gifts(coins: list[int]) -> None:
    diamonds, carries = _credit_all(coins, DiamondRate(1, 1))
    assert diamonds == coins
    assert all(c == 0 for c in carries)


@pytest.mark.parametrize(("numerator", "denominator"), [(1, 2), (2, 3)])
@given(coins=gift_streams)
def test_fractional_rate_loses_no_fraction_over_many_gifts(
    numerator: int, denominator: int, coins: list[int]
) -> None:
    rate = DiamondRate(numerator, denominator)
    diamonds, carries = _credit_all(coins, rate)
    final_carry = carries[-1] if carries else 0
    assert sum(diamonds) * denominator + final_carry == sum(coins) * numerator
    assert all(0 <= c < denominator for c in carries)
    assert all(d >= 0 for d in diamonds)


@given(
    numerator=st.integers(min_value=0, max_value=50),
    denominator=st.integers(min_value=1, max_value=1_000),
    coins=gift_streams,
)
def test_any_rate_credits_the_floor_of_the_exact_running_total_after_every_gift(
    numerator: int, denominator: int, coins: list[int]
) -> None:
    rate = DiamondRate(numerator, denominator)
    diamonds, carries = _credit_all(coins, rate)
    credited = 0
    owed_units = 0
    for amount, gift_diamonds, carry in zip(coins, diamonds, carries, strict=True):
        credited += gift_diamonds
        owed_units += amount * numerator
        assert credited == owed_units // denominator
        assert credited * denominator + carry == owed_units
        assert 0 <= carry < denominator
