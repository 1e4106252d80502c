"""The coin economy against the real server: a host's earnings and payouts of diamonds."""

import asyncio
from collections import Counter

from support import Api
from support.economy import (
    diamonds_of,
    error,
    get,
    host_with_diamonds,
    make_user,
    ok,
    ok_list,
    post,
    unique,
    video_gift,
    video_of,
)

# --- earnings and cash-out --------------------------------------------------------------------


async def test_earnings_show_diamonds_their_value_and_a_coins_estimate(api: Api) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    whale = await make_user(api, coins=5000)
    ok(await video_gift(api, whale, video, "fireworks", unique("e"), count=2))  # 2176 coins

    earnings = ok(await get(api, "/v1/earnings?coins=1000", host))

    assert (earnings["diamonds"], earnings["value"], earnings["currency"]) == (2176, "10.88", "USD")
    assert earnings["diamond_value"] == "0.005"
    assert earnings["minimum_payout"] == {"diamonds": 10_000, "value": "50.00"}
    assert earnings["can_cash_out"] is False
    assert earnings["payouts"] == []
    assert earnings["estimate"] == {
        "coins": 1000,
        "diamonds": 1000,
        "value": "5.00",
        "currency": "USD",
    }
    odd = ok(await get(api, "/v1/earnings?coins=1999", host))["estimate"]
    assert (odd["diamonds"], odd["value"]) == (1999, "9.99")
    error(await get(api, "/v1/earnings?coins=lots", host), 400, "invalid_field")


async def test_a_payout_below_10000_diamonds_is_below_minimum_and_debits_nothing(
    api: Api,
) -> None:
    host, _ = await host_with_diamonds(api, 2)

    error(
        await post(api, "/v1/payouts", host, {"id": unique("p"), "diamonds": 9_999}),
        400,
        "below_minimum",
    )

    assert await diamonds_of(api, host) == 20_000
    assert ok_list(await get(api, "/v1/payouts", host)) == []


async def test_a_payout_above_the_diamonds_held_is_insufficient_diamonds(api: Api) -> None:
    host, _ = await host_with_diamonds(api, 1)

    error(
        await post(api, "/v1/payouts", host, {"id": unique("p"), "diamonds": 10_001}),
        402,
        "insufficient_diamonds",
    )

    assert await diamonds_of(api, host) == 10_000
    assert ok_list(await get(api, "/v1/payouts", host)) == []


async def test_a_payout_debits_the_diamonds_once_and_is_idempotent_on_its_id(
    api: Api,
) -> None:
    host, _ = await host_with_diamonds(api, 2)
    request = unique("payout")

    paid = ok(await post(api, "/v1/payouts", host, {"id": request, "diamonds": 15_000}))
    again = ok(await post(api, "/v1/payouts", host, {"id": request, "diamonds": 15_000}))
    other = await post(api, "/v1/payouts", host, {"id": request, "diamonds": 12_000})

    record = paid["payout"]
    assert (paid["diamonds"], paid["replayed"]) == (5_000, False)
    assert (record["id"], record["diamonds"], record["amount"]) == (request, 15_000, "75.00")
    assert (record["currency"], record["state"]) == ("USD", "paid")
    assert again == {"payout": record, "diamonds": 5_000, "replayed": True}
    error(other, 409, "idempotency_conflict")
    assert await diamonds_of(api, host) == 5_000
    assert ok_list(await get(api, "/v1/payouts", host)) == [record]
    earnings = ok(await get(api, "/v1/earnings", host))
    assert (earnings["diamonds"], earnings["value"], earnings["payouts"]) == (
        5_000,
        "25.00",
        [record],
    )


async def test_concurrent_payouts_never_take_more_diamonds_than_the_host_holds(
    api: Api,
) -> None:
    host, _ = await host_with_diamonds(api, 3)

    answers = await asyncio.gather(
        *(post(api, "/v1/payouts", host, {"id": f"race-{n}", "diamonds": 10_000}) for n in range(8))
    )

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 3, 402: 5}, [r.text for r in answers]
    assert await diamonds_of(api, host) == 0
    assert len(ok_list(await get(api, "/v1/payouts", host))) == 3


async def test_a_viewer_without_a_room_cannot_cash_out(api: Api) -> None:
    viewer = await make_user(api, coins=10)

    error(
        await post(api, "/v1/payouts", viewer, {"id": unique("p"), "diamonds": 10_000}),
        400,
        "below_minimum",
    )
    assert ok_list(await get(api, "/v1/payouts", viewer)) == []
