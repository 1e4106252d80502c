"""The coin economy against the real server: the price lists, by region, channel and promotion,
and custom amounts."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from support import Api
from support.economy import BUNDLED, Json, PromoServer, error, get, ok, ok_list

# --- prices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["US", "BR", "GB", "JP", "CH", "FR"])
@pytest.mark.parametrize("channel", ["web", "android", "ios"])
async def test_packages_list_exactly_what_a_buyer_pays_in_each_region_and_channel(
    api: Api, region: str, channel: str
) -> None:
    listed = ok_list(await get(api, f"/v1/packages?region={region}&channel={channel}"))

    expected = BUNDLED.price_list(region, channel, datetime.now(UTC))
    assert [p["id"] for p in listed] == [q.package for q in expected]
    for item, quote in zip(listed, expected, strict=True):
        assert (item["coins"], item["price"], item["currency"]) == (
            quote.coins,
            quote.price_text,
            quote.currency,
        )
        assert (item["channel"], item["region"]) == (channel, region)
        assert item["total_coins"] == item["coins"] + item["bonus"]
        per_coin = Decimal(item["price"]) / item["total_coins"]
        assert item["price_per_coin"] == f"{per_coin.quantize(Decimal('0.000001')):f}"


async def test_packages_without_region_or_channel_are_the_default_web_prices(api: Api) -> None:
    listed = ok_list(await get(api, "/v1/packages"))

    assert [(p["id"], p["price"], p["currency"], p["channel"]) for p in listed][:2] == [
        ("coins_70", "0.74", "USD", "web"),
        ("coins_350", "3.64", "USD", "web"),
    ]
    assert listed[-1]["price"] == "174.99"


async def test_the_published_prices_are_served_for_a_few_region_channel_pairs(api: Api) -> None:
    def first(listed: list[Json]) -> tuple[str, str, str]:
        return (listed[0]["price"], listed[0]["currency"], listed[0]["price_per_coin"])

    assert first(ok_list(await get(api, "/v1/packages?region=JP&channel=ios"))) == (
        "200",
        "JPY",
        "2.857143",
    )
    assert first(ok_list(await get(api, "/v1/packages?region=BR&channel=android")))[:2] == (
        "3.79",
        "BRL",
    )
    assert first(ok_list(await get(api, "/v1/packages?region=ch&channel=web")))[:2] == (
        "0.98",
        "CHF",
    )


async def test_packages_in_a_region_where_coins_are_not_sold_are_unavailable(api: Api) -> None:
    error(await get(api, "/v1/packages?region=IN&channel=web"), 403, "unavailable_in_region")


async def test_packages_for_an_unknown_channel_or_bad_region_are_invalid(api: Api) -> None:
    error(await get(api, "/v1/packages?region=US&channel=windows"), 400, "invalid_field")
    error(await get(api, "/v1/packages?region=USA&channel=web"), 400, "invalid_field")


async def test_a_custom_web_amount_is_quoted_at_the_custom_rate(api: Api) -> None:
    us = ok(await get(api, "/v1/packages/quote?region=US&channel=web&coins=1000"))
    jp = ok(await get(api, "/v1/packages/quote?region=JP&channel=web&coins=1000"))

    assert (us["id"], us["coins"], us["price"], us["currency"]) == (None, 1000, "10.60", "USD")
    assert (jp["price"], jp["currency"]) == ("2290", "JPY")
    assert us["total_coins"] == 1000 + us["bonus"]


@pytest.mark.parametrize("channel", ["ios", "android"])
async def test_a_custom_amount_is_refused_on_the_app_stores(api: Api, channel: str) -> None:
    message = error(
        await get(api, f"/v1/packages/quote?region=US&channel={channel}&coins=1000"),
        400,
        "invalid_field",
    )
    assert "web" in message


@pytest.mark.parametrize("coins", ["29", "2500001", "abc", "-5", ""])
async def test_a_custom_amount_out_of_bounds_or_not_a_number_is_refused(
    api: Api, coins: str
) -> None:
    error(await get(api, f"/v1/packages/quote?channel=web&coins={coins}"), 400, "invalid_field")


async def test_a_custom_amount_in_a_region_where_coins_are_not_sold_is_unavailable(
    api: Api,
) -> None:
    error(
        await get(api, "/v1/packages/quote?region=IN&channel=web&coins=100"),
        403,
        "unavailable_in_region",
    )


async def test_the_price_list_in_a_promotion_window_shows_the_bonus_and_the_promotion(
    promo: PromoServer,
) -> None:
    async with Api(promo.server.base_url) as api:
        web = ok_list(await get(api, "/v1/packages?region=US&channel=web"))
        ios = ok_list(await get(api, "/v1/packages?region=US&channel=ios"))
        br = ok_list(await get(api, "/v1/packages?region=BR&channel=web"))

    # Only the most generous active promotion applies; the ended and upcoming ones never.
    assert {(p["coins"], p["bonus"]) for p in web} >= {(70, 10), (700, 105)}
    assert all(p["promotions"] == ["now-all"] for p in web)
    assert all(p["promotions"] == ["now-ios"] for p in ios)
    assert all(p["promotions"] == ["now-br"] for p in br)
    assert [p["bonus"] for p in ios] == [p["coins"] * 20 // 100 for p in ios]
    assert [p["bonus"] for p in br] == [p["coins"] * 30 // 100 for p in br]
    # The price does not change; the price per coin counts the bonus coins.
    assert [p["price"] for p in web] == [
        q.price_text for q in BUNDLED.price_list("US", "web", datetime.now(UTC))
    ]
    seven_hundred = next(p for p in web if p["coins"] == 700)
    assert seven_hundred["total_coins"] == 805
    assert seven_hundred["price_per_coin"] == "0.008932"  # 7.19 / 805
