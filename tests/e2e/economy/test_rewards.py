"""The coin economy against the real server: the daily check-in and the points exchange."""

from giftstream.store.connection import Redis
from support import Api
from support.economy import PromoServer, error, get, ledger, make_user, ok, post, unique

# --- rewards ----------------------------------------------------------------------------------


async def test_the_daily_check_in_grants_points_once_per_day(api: Api, redis: Redis) -> None:
    viewer = await make_user(api)

    first = ok(await post(api, "/v1/rewards/checkin", viewer, {}))
    second = ok(await post(api, "/v1/rewards/checkin", viewer, {}))

    assert first == {"points": 50, "granted": 50}
    assert second == {"points": 50, "granted": 0}
    rewards = ok(await get(api, "/v1/rewards", viewer))
    assert rewards == {"points": 50, "points_per_coin": 100, "daily_checkin_points": 50}
    assert (await api.wallet(viewer))["points"] == 50
    grants = [e for e in await ledger(redis, viewer) if e["kind"] == "points"]
    assert len(grants) == 1


async def test_exchanging_250_points_gives_2_coins_and_keeps_50_points_idempotently(
    promo: PromoServer,
) -> None:
    async with Api(promo.server.base_url) as api:
        viewer = await make_user(api, coins=1)
        assert ok(await post(api, "/v1/rewards/checkin", viewer, {}))["points"] == 250
        request = unique("swap")

        done = ok(await post(api, "/v1/rewards/exchange", viewer, {"id": request, "points": 250}))
        again = ok(await post(api, "/v1/rewards/exchange", viewer, {"id": request, "points": 250}))
        other = await post(api, "/v1/rewards/exchange", viewer, {"id": request, "points": 100})
        too_few = await post(api, "/v1/rewards/exchange", viewer, {"id": unique("s"), "points": 50})
        too_many = await post(
            api, "/v1/rewards/exchange", viewer, {"id": unique("s"), "points": 300}
        )
        wallet = await api.wallet(viewer)

    assert done == {"coins": 3, "points": 50, "credited": 2, "spent_points": 200, "replayed": False}
    assert again == {**done, "replayed": True}
    error(other, 409, "idempotency_conflict")
    error(too_few, 400, "invalid_field")
    error(too_many, 400, "invalid_field")
    assert (wallet["coins"], wallet["points"]) == (3, 50)
