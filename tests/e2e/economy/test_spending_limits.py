"""The coin economy against the real server: the daily cap a user sets, and the guardian lock."""

from collections import Counter

import pytest

from giftstream.store.connection import Redis
from giftstream_client import Ack, ServerError, SpendingLimit
from support import Api, ServerProcess, connected, gift_burst
from support.economy import (
    coins_of,
    diamonds_of,
    error,
    get,
    ledger,
    make_user,
    ok,
    set_cap,
    unique,
    video_gift,
    video_of,
)

# --- the daily cap and the guardian lock -----------------------------------------------------


async def test_the_daily_cap_is_set_by_the_user_and_shown_with_what_is_left(api: Api) -> None:
    viewer = await make_user(api, coins=10)

    limits = ok(await set_cap(api, viewer, 250))

    assert limits == {
        "daily_cap": 250,
        "spent_today": 0,
        "left_today": 250,
        "guardian_lock": False,
    }
    assert ok(await get(api, "/v1/wallet/limits", viewer)) == limits
    assert (await api.wallet(viewer))["daily_cap"] == 250
    cleared = ok(await set_cap(api, viewer, None))
    assert (cleared["daily_cap"], cleared["left_today"]) == (None, None)


async def test_gifts_over_the_daily_cap_are_refused_with_spending_limit_and_change_nothing(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    viewer = await make_user(api, coins=1000)
    ok(await set_cap(api, viewer, 105))
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        first = await ws.send_gift(room, "confetti", id=unique("cap"))
        assert first.coins == 900
        before = (
            await api.wallet(viewer),
            await diamonds_of(api, host),
            len(await ledger(redis, viewer)),
        )

        with pytest.raises(SpendingLimit) as over:
            await ws.send_gift(room, "rosa", id=unique("cap"))
        over_video = await video_gift(api, viewer, video, "finger_heart", unique("cap"), count=2)
        within = await ws.send_gift(room, "finger_heart", id=unique("cap"))

    assert over.value.code == "spending_limit"
    error(over_video, 403, "spending_limit")
    assert before[0]["spent_today"] == 100 and before[0]["coins"] == 900
    assert within.coins == 895
    assert (await api.wallet(viewer))["spent_today"] == 105
    assert await diamonds_of(api, host) == before[1] + 5
    assert len(await ledger(redis, viewer)) == before[2] + 1
    limits = ok(await get(api, "/v1/wallet/limits", viewer))
    assert (limits["spent_today"], limits["left_today"]) == (105, 0)


async def test_lowering_the_cap_below_what_was_spent_today_refuses_every_further_gift(
    api: Api,
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api, coins=1000)
    ok(await video_gift(api, viewer, video, "confetti", unique("spend")))

    ok(await set_cap(api, viewer, 50))

    error(await video_gift(api, viewer, video, "rose", unique("spend")), 403, "spending_limit")
    assert await coins_of(api, viewer) == 900


async def test_the_daily_cap_is_never_exceeded_under_concurrent_gifts_from_four_connections(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    viewer = await make_user(api, coins=1000)
    ok(await set_cap(api, viewer, 30))
    # 25 gifts in flight on each of four connections at once.
    answers = await gift_burst(server, viewer, room, 4, 25, "capburst")

    acks = [a for a in answers if isinstance(a, Ack)]
    codes = Counter(a.code for a in answers if isinstance(a, ServerError))
    assert len(answers) == 100
    assert len(acks) == 30, codes
    assert codes == {"spending_limit": 70}
    assert sorted(a.coins for a in acks) == list(range(970, 1000))
    wallet = await api.wallet(viewer)
    assert (wallet["coins"], wallet["spent_today"]) == (970, 30)
    assert await diamonds_of(api, host) == 30


async def test_with_a_guardian_lock_only_the_guardian_code_raises_or_removes_the_cap(
    api: Api,
) -> None:
    viewer = await make_user(api, coins=10)
    locked = ok(await set_cap(api, viewer, 100, new_guardian_code="4321"))
    assert (locked["daily_cap"], locked["guardian_lock"]) == (100, True)

    error(await set_cap(api, viewer, 200), 403, "forbidden")
    error(await set_cap(api, viewer, None), 403, "forbidden")
    error(await set_cap(api, viewer, 200, guardian_code="0000"), 403, "forbidden")
    error(await set_cap(api, viewer, 100, new_guardian_code="9999"), 403, "forbidden")
    assert ok(await get(api, "/v1/wallet/limits", viewer))["daily_cap"] == 100

    assert ok(await set_cap(api, viewer, 100))["daily_cap"] == 100
    assert ok(await set_cap(api, viewer, 40))["daily_cap"] == 40
    assert ok(await set_cap(api, viewer, 0))["daily_cap"] == 0
    assert ok(await set_cap(api, viewer, 500, guardian_code="4321"))["daily_cap"] == 500
    removed = ok(await set_cap(api, viewer, None, guardian_code="4321"))
    assert (removed["daily_cap"], removed["guardian_lock"]) == (None, True)
    # A new code replaces the old one, with the old one.
    ok(await set_cap(api, viewer, 10, guardian_code="4321", new_guardian_code="1111"))
    error(await set_cap(api, viewer, 20, guardian_code="4321"), 403, "forbidden")
    assert ok(await set_cap(api, viewer, 20, guardian_code="1111"))["daily_cap"] == 20


async def test_a_cap_of_zero_refuses_every_gift(api: Api) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api, coins=100)
    ok(await set_cap(api, viewer, 0))

    error(await video_gift(api, viewer, video, "rose", unique("zero")), 403, "spending_limit")
    assert await coins_of(api, viewer) == 100
