"""The coin economy against the real server: a receipt is credited once, whoever presents it,
however often and however concurrently."""

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from giftstream.store.connection import Redis
from support import Api
from support.economy import (
    BUNDLED,
    Json,
    coins_of,
    error,
    get,
    ledger,
    make_user,
    ok,
    recharge,
    store_event,
    unique,
    video_gift,
    video_of,
)


async def test_replaying_a_receipt_returns_the_first_result_and_credits_nothing(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api)
    receipt = unique("replay")
    first = ok(await recharge(api, viewer, receipt, "coins_700"))
    entries = len(await ledger(redis, viewer))

    replays = [ok(await recharge(api, viewer, receipt, "coins_700")) for _ in range(3)]

    for replay in replays:
        assert replay["replayed"] is True
        assert {**replay, "replayed": False} == first
    assert await coins_of(api, viewer) == first["coins"]
    assert len(await ledger(redis, viewer)) == entries


async def test_replaying_a_receipt_after_spending_still_returns_the_first_result(
    api: Api,
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api)
    receipt = unique("replay")
    first = ok(await recharge(api, viewer, receipt, "coins_70"))
    ok(await video_gift(api, viewer, video, "rosa", unique("spend")))

    replay = ok(await recharge(api, viewer, receipt, "coins_70"))

    assert replay["credited"] == first["credited"]
    assert await coins_of(api, viewer) == first["coins"] - 10
    # The first result, as a retried gift gets its original ack, balance included.
    assert {**replay, "replayed": False} == first, (first, replay)


@pytest.mark.parametrize(
    "other",
    [
        {"package": "coins_350"},
        {"package": None, "coins": 70},
        {"package": "coins_70", "channel": "ios"},
    ],
)
async def test_the_same_receipt_for_another_purchase_is_an_idempotency_conflict(
    api: Api, redis: Redis, other: Json
) -> None:
    viewer = await make_user(api)
    receipt = unique("conflict")
    first = ok(await recharge(api, viewer, receipt, "coins_70"))
    entries = len(await ledger(redis, viewer))

    error(await recharge(api, viewer, receipt, **other), 409, "idempotency_conflict")

    assert await coins_of(api, viewer) == first["coins"]
    assert len(await ledger(redis, viewer)) == entries
    assert ok(await recharge(api, viewer, receipt, "coins_70"))["replayed"] is True


async def test_a_late_receipt_presented_again_for_another_amount_is_a_conflict(api: Api) -> None:
    viewer = await make_user(api)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_70"), 202)

    error(await recharge(api, viewer, receipt, "coins_700"), 409, "idempotency_conflict")

    settled = ok(await store_event(api, "settled", receipt))
    assert (
        settled["credited"]
        == 70 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus
    )


async def test_one_receipt_presented_concurrently_ten_times_is_credited_once(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api)
    receipt = unique("race")

    answers = await asyncio.gather(
        *(recharge(api, viewer, receipt, "coins_350") for _ in range(10))
    )

    bodies = [ok(r) for r in answers]
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 9
    total = bodies[0]["credited"]
    assert all(b["credited"] == total for b in bodies)
    assert await coins_of(api, viewer) == total
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert len(purchases) == 1


async def test_one_receipt_presented_concurrently_by_two_users_credits_only_one(
    api: Api,
) -> None:
    users = [await make_user(api) for _ in range(2)]
    receipt = unique("race")

    answers = await asyncio.gather(
        *(recharge(api, users[n % 2], receipt, "coins_70") for n in range(10))
    )

    statuses = Counter(r.status_code for r in answers)
    assert statuses[200] >= 1 and statuses[200] + statuses[409] == 10, statuses
    owners = {n % 2 for n, r in enumerate(answers) if r.status_code == 200}
    assert len(owners) == 1, [r.text for r in answers]
    (owner,) = owners
    total = 70 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus
    assert await coins_of(api, users[owner]) == total
    assert await coins_of(api, users[1 - owner]) == 0


async def test_concurrent_settle_notifications_credit_a_late_payment_once(api: Api) -> None:
    viewer = await make_user(api)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_700"), 202)

    answers = await asyncio.gather(*(store_event(api, "settled", receipt) for _ in range(10)))

    bodies = [ok(r) for r in answers]
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 9
    assert await coins_of(api, viewer) == bodies[0]["credited"] >= 700


async def test_concurrent_refund_notifications_claw_back_once(api: Api) -> None:
    viewer = await make_user(api, coins=1000)
    receipt = unique("refund")
    credited = ok(await recharge(api, viewer, receipt, "coins_350"))["credited"]

    answers = await asyncio.gather(*(store_event(api, "refunded", receipt) for _ in range(10)))

    bodies = [ok(r) for r in answers]
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 9
    assert {b["clawed_back"] for b in bodies} == {credited}
    assert await coins_of(api, viewer) == 1000


async def test_a_receipt_presented_by_another_user_is_a_conflict_and_credits_neither(
    api: Api,
) -> None:
    owner = await make_user(api)
    thief = await make_user(api)
    receipt = unique("shared")
    first = ok(await recharge(api, owner, receipt, "coins_70"))

    error(await recharge(api, thief, receipt, "coins_70"), 409, "idempotency_conflict")
    error(await recharge(api, thief, receipt, "coins_350"), 409, "idempotency_conflict")

    assert await coins_of(api, thief) == 0
    assert await coins_of(api, owner) == first["coins"]
    error(await get(api, f"/v1/recharge/{receipt}", thief), 404, "not_found")
