"""The coin economy against the real server: refunds claw back only what was not spent."""

from datetime import UTC, datetime

from giftstream.store.connection import Redis
from support import Api
from support.economy import (
    BUNDLED,
    coins_of,
    diamonds_of,
    error,
    ledger,
    make_user,
    ok,
    recharge,
    store_event,
    unique,
    video_gift,
    video_of,
)

# --- refunds ----------------------------------------------------------------------------------


async def test_a_refund_claws_back_only_unspent_coins_and_gifts_sent_stay_final(
    api: Api, redis: Redis
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api)
    receipt = unique("refund")
    bought = ok(await recharge(api, viewer, receipt, "coins_70"))
    # 70 coins, plus a bonus if a bundled promotion happens to be active today.
    left = bought["credited"] - 50
    assert left == 20 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus
    ok(await video_gift(api, viewer, video, "doughnut", unique("r")))
    ok(await video_gift(api, viewer, video, "perfume", unique("r")))
    assert await coins_of(api, viewer) == left

    refund = ok(await store_event(api, "refunded", receipt))
    again = ok(await store_event(api, "refunded", receipt))

    assert refund == {
        "receipt": receipt,
        "status": "refunded",
        "coins": 0,
        "clawed_back": left,
        "unrecovered": 50,
        "replayed": False,
    }
    assert again == {**refund, "replayed": True}
    assert await coins_of(api, viewer) == 0
    assert await diamonds_of(api, host) == 50
    (entry,) = [e for e in await ledger(redis, viewer) if e["kind"] == "refund"]
    assert (entry["ref"], entry["unrecovered"], entry["balance"]) == (receipt, "50", "0")
    assert set(entry["post"].split(";")) == {
        f"user:{viewer.user} coins -{left}",
        f"platform:refunds coins {left}",
    }
    error(await video_gift(api, viewer, video, "rose", unique("r")), 402, "insufficient_coins")
    replay = ok(await recharge(api, viewer, receipt, "coins_70"))
    assert (replay["status"], replay["credited"], replay["replayed"]) == (
        "refunded",
        bought["credited"],
        True,
    )
    assert await coins_of(api, viewer) == 0


async def test_a_refund_of_an_unspent_purchase_claws_back_all_of_it(api: Api) -> None:
    viewer = await make_user(api, coins=15)
    receipt = unique("refund")
    bought = ok(await recharge(api, viewer, receipt, "coins_350"))

    refund = ok(await store_event(api, "refunded", receipt))

    assert (refund["clawed_back"], refund["unrecovered"]) == (bought["credited"], 0)
    assert refund["coins"] == 15
    assert await coins_of(api, viewer) == 15


async def test_refunds_of_unknown_or_unpaid_receipts_change_nothing(api: Api) -> None:
    viewer = await make_user(api, coins=5)
    pending = unique("test-late")
    ok(await recharge(api, viewer, pending, "coins_70"), 202)
    declined = unique("test-decline")
    error(await recharge(api, viewer, declined, "coins_70"), 402, "payment_declined")

    error(await store_event(api, "refunded", unique("never")), 404, "not_found")
    error(await store_event(api, "refunded", pending), 400, "invalid_field")
    error(await store_event(api, "refunded", declined), 404, "not_found")
    error(await store_event(api, "chargeback", pending), 400, "invalid_field")

    assert await coins_of(api, viewer) == 5
