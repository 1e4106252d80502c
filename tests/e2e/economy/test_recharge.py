"""The coin economy against the real server: recharges through the simulated store, their
promotion bonuses, declined and late payments."""

from datetime import UTC, datetime

import pytest

from giftstream.payments import DECLINES
from giftstream.store.connection import Redis
from support import Api, poll
from support.economy import (
    BUNDLED,
    SETTLE_DEADLINE_S,
    Json,
    PromoServer,
    coins_of,
    error,
    get,
    ledger,
    make_user,
    ok,
    recharge,
    store_event,
    unique,
)

# --- recharge ---------------------------------------------------------------------------------


async def test_a_recharge_credits_exactly_the_package_coins_once(api: Api, redis: Redis) -> None:
    viewer = await make_user(api)
    receipt = unique("paid")
    quote = BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_350")

    body = ok(await recharge(api, viewer, receipt, "coins_350"))

    assert (body["status"], body["receipt"], body["replayed"]) == ("paid", receipt, False)
    assert body["credited"] == quote.total_coins == 350 + quote.bonus
    assert body["coins"] == quote.total_coins
    assert body["purchase"]["id"] == "coins_350"
    assert (body["purchase"]["price"], body["purchase"]["currency"]) == ("3.64", "USD")
    assert await coins_of(api, viewer) == quote.total_coins
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert len(purchases) == 1 and purchases[0]["ref"] == receipt
    assert purchases[0]["price"] == "3.64" and purchases[0]["currency"] == "USD"


async def test_a_recharge_of_a_custom_web_amount_credits_that_many_coins(api: Api) -> None:
    viewer = await make_user(api, coins=5, region="GB")
    quote = BUNDLED.quote("GB", "web", datetime.now(UTC), coins=1234)

    body = ok(await recharge(api, viewer, unique("custom"), None, region="GB", coins=1234))

    assert body["credited"] == quote.total_coins
    assert (body["purchase"]["price"], body["purchase"]["currency"]) == (quote.price_text, "GBP")
    assert await coins_of(api, viewer) == 5 + quote.total_coins


async def test_a_recharge_of_a_custom_amount_on_ios_is_refused_and_credits_nothing(
    api: Api,
) -> None:
    viewer = await make_user(api, coins=5)

    error(
        await recharge(api, viewer, unique("custom"), None, channel="ios", coins=1000),
        400,
        "invalid_field",
    )
    error(await recharge(api, viewer, unique("nopkg"), "coins_71"), 400, "invalid_field")
    assert await coins_of(api, viewer) == 5


@pytest.mark.parametrize(
    ("channel", "region", "package", "bonus"),
    [
        ("web", "US", "coins_700", 105),  # now-all 15 %
        ("web", "US", "coins_70", 10),  # 15 % of 70 = 10.5, rounded down
        ("ios", "US", "coins_700", 140),  # now-ios 20 % beats 15 %
        ("android", "JP", "coins_1400", 210),  # 15 %
        ("web", "BR", "coins_700", 210),  # now-br 30 %
    ],
)
async def test_a_recharge_in_a_promotion_window_credits_the_package_plus_its_bonus(
    promo: PromoServer, channel: str, region: str, package: str, bonus: int
) -> None:
    async with Api(promo.server.base_url) as api:
        viewer = await make_user(api, region=region)
        coins = BUNDLED.packages[package].coins

        body = ok(
            await recharge(api, viewer, unique("promo"), package, region=region, channel=channel)
        )

        assert (body["purchase"]["coins"], body["purchase"]["bonus"]) == (coins, bonus)
        assert body["credited"] == coins + bonus
        assert await coins_of(api, viewer) == coins + bonus
        now = datetime.now(UTC)
        assert body["purchase"]["bonus"] == promo.economy.quote(region, channel, now, package).bonus


async def test_a_promotion_bonus_is_posted_to_the_promotions_account_in_the_ledger(
    promo: PromoServer, redis: Redis
) -> None:
    async with Api(promo.server.base_url) as api:
        viewer = await make_user(api)
        receipt = unique("promo")
        ok(await recharge(api, viewer, receipt, "coins_700"))

    (entry,) = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    postings = set(entry["post"].split(";"))
    assert postings == {
        "platform:sales coins -700",
        "platform:promotions coins -105",
        f"user:{viewer.user} coins 805",
    }


@pytest.mark.parametrize("prefix", ["test-decline", "test-fraud", "test-parental"])
async def test_each_failing_receipt_is_payment_declined_with_its_reason_and_credits_nothing(
    api: Api, redis: Redis, prefix: str
) -> None:
    viewer = await make_user(api, coins=7)
    receipt = unique(prefix)
    entries = len(await ledger(redis, viewer))

    message = error(await recharge(api, viewer, receipt, "coins_350"), 402, "payment_declined")
    again = error(await recharge(api, viewer, receipt, "coins_350"), 402, "payment_declined")

    assert DECLINES[prefix] in message
    assert again == message
    assert await coins_of(api, viewer) == 7
    assert len(await ledger(redis, viewer)) == entries
    error(await get(api, f"/v1/recharge/{receipt}", viewer), 404, "not_found")


async def test_a_late_payment_is_pending_then_credited_exactly_once_when_a_poll_finds_it_settled(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, coins=3)
    receipt = unique("test-late")

    first = ok(await recharge(api, viewer, receipt, "coins_350"), 202)
    assert (first["status"], first["credited"]) == ("pending", 0)
    assert await coins_of(api, viewer) == 3

    async def status() -> Json:
        return ok(await get(api, f"/v1/recharge/{receipt}", viewer))

    settled = await poll(status, lambda s: s["status"] != "pending", SETTLE_DEADLINE_S, "settled")

    total = 350 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_350").bonus
    assert (settled["status"], settled["credited"], settled["coins"]) == ("paid", total, 3 + total)
    assert await coins_of(api, viewer) == 3 + total
    # A second poll, a replayed recharge and a late store notification credit nothing more.
    assert ok(await get(api, f"/v1/recharge/{receipt}", viewer)) == settled
    replay = ok(await recharge(api, viewer, receipt, "coins_350"))
    assert (replay["status"], replay["credited"], replay["replayed"]) == ("paid", total, True)
    notified = ok(await store_event(api, "settled", receipt))
    assert (notified["status"], notified["replayed"]) == ("paid", True)
    assert await coins_of(api, viewer) == 3 + total
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert [e["ref"] for e in purchases] == [receipt]


async def test_a_late_payment_settled_by_the_store_notification_is_credited_exactly_once(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_70"), 202)
    total = 70 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus

    settled = ok(await store_event(api, "settled", receipt))
    again = ok(await store_event(api, "settled", receipt))

    assert (settled["status"], settled["credited"], settled["replayed"]) == ("paid", total, False)
    assert settled["coins"] == total
    assert (again["status"], again["credited"], again["replayed"]) == ("paid", total, True)
    polled = ok(await get(api, f"/v1/recharge/{receipt}", viewer))
    assert (polled["status"], polled["coins"]) == ("paid", total)
    assert await coins_of(api, viewer) == total
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert [e["ref"] for e in purchases] == [receipt]


async def test_a_late_payment_the_store_reports_failed_is_never_credited(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, coins=40)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_350"), 202)

    failed = ok(await store_event(api, "failed", receipt))
    settled_after = ok(await store_event(api, "settled", receipt))

    assert failed["status"] == "declined"
    assert failed["credited"] == 0
    assert settled_after["status"] == "declined" and settled_after["credited"] == 0
    polled = ok(await get(api, f"/v1/recharge/{receipt}", viewer))
    assert (polled["status"], polled["credited"], polled["coins"]) == ("declined", 0, 40)
    assert await coins_of(api, viewer) == 40
    assert [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"] == []
    # The answer to the store reports the account's balance, as every other answer does.
    assert failed["coins"] == 40, failed
