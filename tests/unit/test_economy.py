"""Pure pricing of the coin economy (domain/economy.py): the bundled price tables, channels,
promotion windows, custom amounts, unsold regions and the cash-out arithmetic."""

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftstream.domain.economy import (
    ANY_REGION,
    Economy,
    PriceError,
    Promotion,
    UnsoldRegion,
    load_economy,
    parse_economy,
)

ECONOMY = load_economy()
# A date with no bundled promotion active: prices and coins only.
QUIET = datetime(2026, 6, 1, 12, tzinfo=UTC)
PACKAGES = [
    "coins_70",
    "coins_350",
    "coins_700",
    "coins_1400",
    "coins_3500",
    "coins_7000",
    "coins_17500",
]
COINS = [70, 350, 700, 1400, 3500, 7000, 17500]
SOLD_REGIONS = ["US", "BR", "GB", "JP", "CH", ANY_REGION]
CHANNELS_BY_PRICE = ["web", "android", "ios"]

# What a buyer pays on the web, by region (docs/economy.md): US price x region multiplier x
# exchange rate, rounded half up to the currency's minor unit.
WEB_PRICES: dict[str, tuple[str, list[str]]] = {
    "US": ("USD", ["0.74", "3.64", "7.19", "14.29", "35.49", "70.49", "174.99"]),
    "BR": ("BRL", ["3.29", "16.20", "32.00", "63.59", "157.93", "313.68", "778.71"]),
    "GB": ("GBP", ["0.80", "3.91", "7.72", "15.35", "38.13", "75.73", "188.01"]),
    "JP": ("JPY", ["160", "786", "1553", "3087", "7666", "15226", "37798"]),
    "CH": ("CHF", ["0.98", "4.84", "9.55", "18.99", "47.16", "93.67", "232.53"]),
    ANY_REGION: ("USD", ["0.74", "3.64", "7.19", "14.29", "35.49", "70.49", "174.99"]),
}

# US prices by channel: the app stores' commission (x1.15 android, x1.25 ios).
US_CHANNEL_PRICES: dict[str, list[tuple[str, str]]] = {
    "web": [
        ("0.74", "0.010571"),
        ("3.64", "0.010400"),
        ("7.19", "0.010271"),
        ("14.29", "0.010207"),
        ("35.49", "0.010140"),
        ("70.49", "0.010070"),
        ("174.99", "0.009999"),
    ],
    "android": [
        ("0.85", "0.012143"),
        ("4.19", "0.011971"),
        ("8.27", "0.011814"),
        ("16.43", "0.011736"),
        ("40.81", "0.011660"),
        ("81.06", "0.011580"),
        ("201.24", "0.011499"),
    ],
    "ios": [
        ("0.93", "0.013286"),
        ("4.55", "0.013000"),
        ("8.99", "0.012843"),
        ("17.86", "0.012757"),
        ("44.36", "0.012674"),
        ("88.11", "0.012587"),
        ("218.74", "0.012499"),
    ],
}

# The 70-coin pack in every region and channel.
COINS_70: dict[str, dict[str, str]] = {
    "US": {"web": "0.74", "android": "0.85", "ios": "0.93"},
    "BR": {"web": "3.29", "android": "3.79", "ios": "4.12"},
    "GB": {"web": "0.80", "android": "0.91", "ios": "0.99"},
    "JP": {"web": "160", "android": "184", "ios": "200"},
    "CH": {"web": "0.98", "android": "1.13", "ios": "1.23"},
    ANY_REGION: {"web": "0.74", "android": "0.85", "ios": "0.93"},
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def with_promotions(*promotions: Promotion) -> Economy:
    return dataclasses.replace(ECONOMY, promotions=list(promotions))


def promo(
    ident: str,
    percent: int,
    starts: str = "2030-01-01T00:00:00",
    ends: str = "2030-01-08T00:00:00",
    channels: set[str] | None = None,
    regions: set[str] | None = None,
) -> Promotion:
    return Promotion(
        id=ident,
        name=ident,
        bonus_percent=percent,
        starts=at(starts),
        ends=at(ends),
        channels=frozenset(channels) if channels is not None else None,
        regions=frozenset(regions) if regions is not None else None,
    )


IN_WINDOW = at("2030-01-03T00:00:00")


# --- bundled prices ---------------------------------------------------------------------------


@pytest.mark.parametrize("region", SOLD_REGIONS)
def test_web_price_list_of_each_region_is_the_published_table(region: str) -> None:
    currency, prices = WEB_PRICES[region]

    quotes = ECONOMY.price_list(region, "web", QUIET)

    assert [q.package for q in quotes] == PACKAGES
    assert [q.coins for q in quotes] == COINS
    assert [q.price_text for q in quotes] == prices
    assert {q.currency for q in quotes} == {currency}
    assert all(q.bonus == 0 and q.promotions == () for q in quotes)


@pytest.mark.parametrize("channel", CHANNELS_BY_PRICE)
def test_us_prices_and_price_per_coin_by_channel_are_the_published_table(channel: str) -> None:
    quotes = ECONOMY.price_list("US", channel, QUIET)

    assert [(q.price_text, q.price_per_coin) for q in quotes] == US_CHANNEL_PRICES[channel]
    assert all(q.channel == channel and q.region == "US" for q in quotes)


@pytest.mark.parametrize("region", SOLD_REGIONS)
@pytest.mark.parametrize("channel", CHANNELS_BY_PRICE)
def test_the_70_coin_pack_costs_the_published_price_in_every_region_and_channel(
    region: str, channel: str
) -> None:
    quote = ECONOMY.quote(region, channel, QUIET, package="coins_70")

    assert quote.price_text == COINS_70[region][channel]
    assert quote.currency == WEB_PRICES[region][0]


@pytest.mark.parametrize("region", ["FR", "DE", "MX", "ZZ"])
def test_a_region_without_its_own_row_pays_the_default_us_dollar_prices(region: str) -> None:
    for channel in CHANNELS_BY_PRICE:
        got = [(q.price, q.currency) for q in ECONOMY.price_list(region, channel, QUIET)]
        default = [(q.price, q.currency) for q in ECONOMY.price_list(ANY_REGION, channel, QUIET)]
        assert got == default
    assert ECONOMY.quote(region, "web", QUIET, package="coins_70").region == region


@pytest.mark.parametrize("region", SOLD_REGIONS)
def test_web_is_cheaper_than_android_which_is_cheaper_than_ios_for_every_package(
    region: str,
) -> None:
    for package in PACKAGES:
        prices = [ECONOMY.quote(region, c, QUIET, package=package).price for c in CHANNELS_BY_PRICE]
        assert prices[0] < prices[1] < prices[2], (region, package, prices)


@pytest.mark.parametrize("region", SOLD_REGIONS)
@pytest.mark.parametrize("channel", CHANNELS_BY_PRICE)
def test_bigger_packages_cost_strictly_less_per_coin_in_every_region_and_channel(
    region: str, channel: str
) -> None:
    quotes = ECONOMY.price_list(region, channel, QUIET)
    per_coin = [q.price / q.coins for q in quotes]

    assert [q.coins for q in quotes] == sorted(q.coins for q in quotes)
    assert all(a > b for a, b in pairwise(per_coin)), per_coin
    assert all(Decimal(q.price_per_coin) > 0 for q in quotes)


def test_the_70_coin_pack_in_dollars_follows_the_seeds_regional_order() -> None:
    """Seeds: ~$0.65 Brazil < $0.73 US < $0.99 UK < $1.05 Japan < $1.10 Switzerland."""

    def in_dollars(region: str) -> Decimal:
        quote = ECONOMY.quote(region, "web", QUIET, package="coins_70")
        return quote.price / ECONOMY.region(region).usd_rate

    dollars = [in_dollars(r) for r in ("BR", "US", "GB", "JP", "CH")]

    assert dollars == sorted(dollars)
    assert len(set(dollars)) == 5
    for got, seed in zip(dollars, ["0.65", "0.73", "0.99", "1.05", "1.10"], strict=True):
        assert abs(got - Decimal(seed)) <= Decimal("0.10"), (got, seed)


@pytest.mark.parametrize("channel", CHANNELS_BY_PRICE)
def test_yen_prices_have_no_decimals(channel: str) -> None:
    quotes = ECONOMY.price_list("JP", channel, QUIET)
    quotes.append(ECONOMY.quote("JP", "web", QUIET, coins=1234))

    for quote in quotes:
        assert quote.currency == "JPY"
        assert quote.price == quote.price.to_integral_value()
        assert quote.price.as_tuple().exponent == 0
        assert "." not in quote.price_text


@pytest.mark.parametrize("region", ["US", "BR", "GB", "CH"])
def test_cent_currencies_are_priced_to_exactly_two_decimals(region: str) -> None:
    for channel in CHANNELS_BY_PRICE:
        for quote in ECONOMY.price_list(region, channel, QUIET):
            assert quote.price.as_tuple().exponent == -2, quote


def test_prices_round_half_up_to_the_minor_unit() -> None:
    half_cent = dataclasses.replace(
        ECONOMY, custom_usd_per_coin=Decimal("0.005"), custom_min_coins=1
    )

    def price(coins: int) -> str:
        return half_cent.quote("US", "web", QUIET, coins=coins).price_text

    assert price(1) == "0.01"  # 0.005 (half to even would give 0.00)
    assert price(5) == "0.03"  # 0.025 (half to even would give 0.02)
    assert price(2) == "0.01"  # 0.010 exactly


def test_price_per_coin_counts_bonus_coins() -> None:
    economy = with_promotions(promo("ten", 10))

    quote = economy.quote("US", "web", IN_WINDOW, package="coins_700")

    assert (quote.coins, quote.bonus, quote.total_coins) == (700, 70, 770)
    assert quote.price_per_coin == "0.009338"  # 7.19 / 770
    public = quote.public()
    assert public["total_coins"] == 770
    assert public["price"] == "7.19"
    assert public["promotions"] == ["ten"]


# --- promotions -------------------------------------------------------------------------------


def test_the_bundled_holiday_promotion_adds_15_percent_on_every_channel_in_its_window() -> None:
    christmas = at("2026-12-25T00:00:00")

    for channel in CHANNELS_BY_PRICE:
        quote = ECONOMY.quote("US", channel, christmas, package="coins_7000")
        assert (quote.bonus, quote.promotions) == (1050, ("holidays-2026",))
    assert ECONOMY.quote("JP", "ios", christmas, package="coins_70").bonus == 10


def test_the_bundled_anniversary_promotion_is_web_only() -> None:
    during = at("2027-05-03T00:00:00")

    web = ECONOMY.quote("GB", "web", during, package="coins_700")
    ios = ECONOMY.quote("GB", "ios", during, package="coins_700")
    android = ECONOMY.quote("GB", "android", during, package="coins_700")

    assert (web.bonus, web.promotions) == (70, ("anniversary-web-2027",))
    assert (ios.bonus, ios.promotions) == (0, ())
    assert (android.bonus, android.promotions) == (0, ())


@pytest.mark.parametrize(
    ("when", "bonus"),
    [
        ("2026-12-19T23:59:59.999999", 0),
        ("2026-12-20T00:00:00", 105),
        ("2027-01-05T23:59:59.999999", 105),
        ("2027-01-06T00:00:00", 0),
    ],
)
def test_the_bundled_holiday_window_starts_inclusive_and_ends_exclusive(
    when: str, bonus: int
) -> None:
    assert ECONOMY.quote("US", "web", at(when), package="coins_700").bonus == bonus


def test_a_promotion_applies_from_its_start_inclusive_to_its_end_exclusive() -> None:
    starts, ends = at("2030-01-01T00:00:00"), at("2030-01-08T00:00:00")
    economy = with_promotions(promo("window", 20))
    tick = timedelta(microseconds=1)

    def bonus(now: datetime) -> int:
        return economy.quote("US", "web", now, package="coins_350").bonus

    assert bonus(starts - tick) == 0
    assert bonus(starts) == 70
    assert bonus(ends - tick) == 70
    assert bonus(ends) == 0
    assert bonus(ends + timedelta(days=365)) == 0


def test_a_channel_promotion_applies_only_to_its_channels() -> None:
    economy = with_promotions(promo("apps", 20, channels={"ios", "android"}))

    bonuses = {
        c: economy.quote("US", c, IN_WINDOW, package="coins_700").bonus for c in CHANNELS_BY_PRICE
    }

    assert bonuses == {"web": 0, "android": 140, "ios": 140}


def test_a_region_promotion_applies_only_to_its_regions() -> None:
    economy = with_promotions(promo("brazil", 30, regions={"BR"}))

    br = economy.quote("BR", "ios", IN_WINDOW, package="coins_700")
    us = economy.quote("US", "ios", IN_WINDOW, package="coins_700")

    assert (br.bonus, br.promotions) == (210, ("brazil",))
    assert (us.bonus, us.promotions) == (0, ())
    for quote in economy.price_list("BR", "web", IN_WINDOW):
        assert quote.bonus == quote.coins * 30 // 100


def test_a_promotion_for_a_channel_and_a_region_needs_both() -> None:
    economy = with_promotions(promo("br-web", 25, channels={"web"}, regions={"BR"}))

    assert economy.quote("BR", "web", IN_WINDOW, package="coins_700").bonus == 175
    assert economy.quote("BR", "ios", IN_WINDOW, package="coins_700").bonus == 0
    assert economy.quote("US", "web", IN_WINDOW, package="coins_700").bonus == 0


def test_promotions_do_not_stack_the_most_generous_active_one_wins() -> None:
    economy = with_promotions(
        promo("small", 5),
        promo("big", 25),
        promo("medium", 10),
        promo("bigger-but-ios", 40, channels={"ios"}),
        promo("biggest-but-over", 90, starts="2029-01-01T00:00:00", ends="2029-02-01T00:00:00"),
    )

    web = economy.quote("US", "web", IN_WINDOW, package="coins_1400")
    ios = economy.quote("US", "ios", IN_WINDOW, package="coins_1400")

    assert (web.bonus, web.promotions) == (350, ("big",))
    assert (ios.bonus, ios.promotions) == (560, ("bigger-but-ios",))


def test_a_promotion_bonus_rounds_down_to_whole_coins() -> None:
    economy = with_promotions(promo("fifteen", 15))

    assert economy.quote("US", "web", IN_WINDOW, package="coins_70").bonus == 10  # 10.5
    assert economy.quote("US", "web", IN_WINDOW, coins=33).bonus == 4  # 4.95
    assert economy.quote("US", "web", IN_WINDOW, coins=99).bonus == 14  # 14.85


@given(
    coins=st.integers(min_value=30, max_value=2_500_000),
    percent=st.integers(min_value=1, max_value=100),
)
def test_a_custom_amount_bonus_is_the_floor_of_its_percentage(coins: int, percent: int) -> None:
    economy = with_promotions(promo("any", percent))

    quote = economy.quote("US", "web", IN_WINDOW, coins=coins)

    assert quote.bonus == coins * percent // 100
    assert quote.bonus <= coins * percent / 100 < quote.bonus + 1
    assert quote.total_coins == coins + quote.bonus


def test_a_promotion_does_not_change_the_price() -> None:
    economy = with_promotions(promo("twenty", 20))

    for region in SOLD_REGIONS:
        for channel in CHANNELS_BY_PRICE:
            during = [q.price for q in economy.price_list(region, channel, IN_WINDOW)]
            quiet = [q.price for q in ECONOMY.price_list(region, channel, QUIET)]
            assert during == quiet


# --- custom amounts ---------------------------------------------------------------------------


def test_a_custom_amount_on_the_web_costs_the_custom_rate_in_the_region() -> None:
    us = ECONOMY.quote("US", "web", QUIET, coins=1000)
    jp = ECONOMY.quote("JP", "web", QUIET, coins=1000)

    assert (us.package, us.coins, us.price_text, us.currency) == (None, 1000, "10.60", "USD")
    assert (jp.price_text, jp.currency) == ("2290", "JPY")  # 10.60 x 1.44 x 150 = 2289.6


@pytest.mark.parametrize("channel", ["ios", "android"])
def test_custom_amounts_are_refused_on_the_app_stores(channel: str) -> None:
    with pytest.raises(PriceError, match="web only"):
        ECONOMY.quote("US", channel, QUIET, coins=1000)


@pytest.mark.parametrize("coins", [30, 31, 2_499_999, 2_500_000])
def test_custom_amounts_within_the_bounds_are_sold(coins: int) -> None:
    assert ECONOMY.quote("US", "web", QUIET, coins=coins).coins == coins


@pytest.mark.parametrize("coins", [-1, 0, 1, 29, 2_500_001, 10**9])
def test_custom_amounts_outside_the_bounds_are_refused(coins: int) -> None:
    with pytest.raises(PriceError, match="30 to 2500000"):
        ECONOMY.quote("US", "web", QUIET, coins=coins)


def test_a_quote_needs_exactly_one_of_a_package_or_a_number_of_coins() -> None:
    with pytest.raises(PriceError):
        ECONOMY.quote("US", "web", QUIET)
    with pytest.raises(PriceError):
        ECONOMY.quote("US", "web", QUIET, package="coins_70", coins=70)


def test_an_unknown_package_or_channel_is_refused() -> None:
    with pytest.raises(PriceError, match="no package"):
        ECONOMY.quote("US", "web", QUIET, package="coins_71")
    with pytest.raises(PriceError, match="unknown channel"):
        ECONOMY.quote("US", "windows", QUIET, package="coins_70")


# --- regions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS_BY_PRICE)
def test_a_region_where_coins_are_not_sold_raises_unsold_region(channel: str) -> None:
    assert not ECONOMY.sells_coins_in("IN")
    with pytest.raises(UnsoldRegion):
        ECONOMY.quote("IN", channel, QUIET, package="coins_70")
    with pytest.raises(UnsoldRegion):
        ECONOMY.price_list("IN", channel, QUIET)
    if channel == "web":
        with pytest.raises(UnsoldRegion):
            ECONOMY.quote("IN", channel, QUIET, coins=100)


def test_unsold_region_is_a_price_error() -> None:
    assert issubclass(UnsoldRegion, PriceError)


@pytest.mark.parametrize("region", [*SOLD_REGIONS, "FR"])
def test_coins_are_sold_in_every_other_region(region: str) -> None:
    assert ECONOMY.sells_coins_in(region)


# --- cash-out ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diamonds", "dollars"),
    [
        (0, "0.00"),
        (1, "0.00"),
        (2, "0.01"),
        (3, "0.01"),
        (1999, "9.99"),
        (10_000, "50.00"),
        (10_001, "50.00"),
        (30_016, "150.08"),
        (123_457, "617.28"),
    ],
)
def test_diamonds_value_rounds_down_to_the_cent(diamonds: int, dollars: str) -> None:
    value = ECONOMY.diamonds_value(diamonds)

    assert value == Decimal(dollars)
    assert f"{value:f}" == dollars


@given(st.integers(min_value=0, max_value=10**12))
def test_diamonds_value_never_exceeds_the_exact_value(diamonds: int) -> None:
    exact = Decimal("0.005") * diamonds
    value = ECONOMY.diamonds_value(diamonds)

    assert value <= exact < value + Decimal("0.01")


def test_the_minimum_payout_is_10000_diamonds_worth_50_dollars() -> None:
    assert ECONOMY.minimum_payout_usd == Decimal("50.00")
    assert ECONOMY.diamond_value_usd == Decimal("0.005")
    assert ECONOMY.minimum_payout_diamonds == 10_000
    assert ECONOMY.diamonds_value(ECONOMY.minimum_payout_diamonds) == Decimal("50.00")
    assert ECONOMY.diamonds_value(ECONOMY.minimum_payout_diamonds - 1) < Decimal("50.00")


def test_a_minimum_between_two_diamonds_rounds_up_to_the_next_whole_diamond() -> None:
    economy = dataclasses.replace(ECONOMY, minimum_payout_usd=Decimal("50.001"))

    assert economy.minimum_payout_diamonds == 10_001
    assert economy.diamonds_value(economy.minimum_payout_diamonds) >= Decimal("50.00")


def test_the_bundled_rewards_age_and_late_settlement_settings() -> None:
    assert (ECONOMY.points_per_coin, ECONOMY.daily_checkin_points) == (100, 50)
    assert ECONOMY.minimum_age == 18
    assert ECONOMY.late_settle_ms == 2000
    assert (ECONOMY.custom_min_coins, ECONOMY.custom_max_coins) == (30, 2_500_000)


# --- the data file ----------------------------------------------------------------------------


def minimal_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "package": [{"id": "p", "coins": 10, "usd": "0.10"}],
        "region": [
            {"code": "*", "currency": "USD", "usd_rate": "1", "multiplier": "1", "decimals": 2}
        ],
        "channels": {"web": "1.00"},
        "recharge": {
            "custom_min_coins": 1,
            "custom_max_coins": 10,
            "custom_usd_per_coin": "0.01",
            "late_settle_ms": 1,
        },
        "cashout": {"diamond_value_usd": "0.005", "minimum_usd": "50.00"},
        "rewards": {"points_per_coin": 100, "daily_checkin_points": 50},
        "age": {"minimum": 18},
    }
    data.update(overrides)
    return data


def test_a_data_file_without_a_default_region_is_refused() -> None:
    data = minimal_data(
        region=[
            {"code": "US", "currency": "USD", "usd_rate": "1", "multiplier": "1", "decimals": 2}
        ]
    )
    with pytest.raises(ValueError, match="default region"):
        parse_economy(data)


def test_money_in_the_data_file_must_be_decimal_strings_not_floats() -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_economy(minimal_data(package=[{"id": "p", "coins": 10, "usd": 0.1}]))


def test_a_promotion_time_without_a_zone_is_read_as_utc() -> None:
    economy = parse_economy(
        minimal_data(
            promotion=[
                {
                    "id": "x",
                    "name": "x",
                    "bonus_percent": 10,
                    "starts": "2030-01-01T00:00:00",
                    "ends": "2030-01-02T00:00:00Z",
                }
            ]
        )
    )
    (promotion,) = economy.promotions
    assert promotion.starts == datetime(2030, 1, 1, tzinfo=UTC)
    assert promotion.ends == datetime(2030, 1, 2, tzinfo=UTC)
    assert economy.quote("US", "web", datetime(2030, 1, 1, tzinfo=UTC), package="p").bonus == 1
