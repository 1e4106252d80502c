"""The coin economy against the real server: who may buy, send and receive, by region and by
age."""

import pytest

from giftstream.store.connection import Redis
from giftstream_client import Forbidden
from support import Api, ServerProcess, connected
from support.economy import (
    coins_of,
    diamonds_of,
    error,
    ledger,
    make_user,
    ok,
    recharge,
    unique,
    video_gift,
    video_of,
)


async def test_a_purchase_from_another_region_is_forbidden_and_flagged_in_the_ledger(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, region="US")
    receipt = unique("vpn")

    message = error(await recharge(api, viewer, receipt, "coins_70", region="BR"), 403, "forbidden")

    assert "region" in message
    assert await coins_of(api, viewer) == 0
    flags = [e for e in await ledger(redis, viewer) if e["kind"] == "flag"]
    assert len(flags) == 1
    assert (flags[0]["reason"], flags[0]["ref"], flags[0]["post"]) == (
        "region_mismatch",
        receipt,
        "",
    )
    # The refused attempt did not use up the receipt: from the right region it is paid.
    assert ok(await recharge(api, viewer, receipt, "coins_70", region="US"))["status"] == "paid"


async def test_a_purchase_in_a_region_where_coins_are_not_sold_is_unavailable_in_region(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, region="IN")

    error(
        await recharge(api, viewer, unique("in"), "coins_70", region="IN"),
        403,
        "unavailable_in_region",
    )

    assert await coins_of(api, viewer) == 0
    assert [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"] == []


async def test_gifts_from_a_region_where_coins_are_not_sold_are_unavailable_in_region(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    viewer = await make_user(api, region="IN", coins=100)
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        with pytest.raises(Forbidden) as refused:
            await ws.send_gift(room, "rose", id=unique("in"))

    assert refused.value.code == "unavailable_in_region"
    error(await video_gift(api, viewer, video, "rose", unique("in")), 403, "unavailable_in_region")
    assert await coins_of(api, viewer) == 100
    assert await diamonds_of(api, host) == 0


# --- age --------------------------------------------------------------------------------------


async def test_a_minor_cannot_buy_coins(api: Api, redis: Redis) -> None:
    minor = await make_user(api, age=17)

    message = error(await recharge(api, minor, unique("minor"), "coins_70"), 403, "forbidden")

    assert "18" in message
    assert await coins_of(api, minor) == 0
    assert [e for e in await ledger(redis, minor) if e["kind"] == "purchase"] == []


async def test_an_adult_of_exactly_18_can_buy_coins(api: Api) -> None:
    adult = await make_user(api, age=18)

    assert ok(await recharge(api, adult, unique("adult"), "coins_70"))["status"] == "paid"


async def test_a_minor_cannot_send_gifts_live_or_to_a_video(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    minor = await make_user(api, coins=500, age=16)
    async with connected(server, minor, receive_events=False) as ws:
        await ws.join(room)
        with pytest.raises(Forbidden) as refused:
            await ws.send_gift(room, "rose", id=unique("minor"))

    assert refused.value.code == "forbidden"
    error(await video_gift(api, minor, video, "rose", unique("minor")), 403, "forbidden")
    assert await coins_of(api, minor) == 500
    assert await diamonds_of(api, host) == 0


async def test_a_minor_host_cannot_receive_gifts_live_or_on_a_video(
    server: ServerProcess, api: Api
) -> None:
    minor_host = await make_user(api, role="host", age=15)
    room = await api.open_room(minor_host)
    video = await video_of(api, minor_host)
    viewer = await make_user(api, coins=500)
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        with pytest.raises(Forbidden) as refused:
            await ws.send_gift(room, "confetti", id=unique("to-minor"))

    assert refused.value.code == "forbidden"
    error(await video_gift(api, viewer, video, "confetti", unique("to-minor")), 403, "forbidden")
    assert await coins_of(api, viewer) == 500
    assert await diamonds_of(api, minor_host) == 0
