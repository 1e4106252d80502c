"""Live rooms end to end: leaderboards, rank badges and supporters — real processes, real Valkey."""

import contextlib

from giftstream.store.embedded import EmbeddedValkey
from support import Api, Frame, ServerProcess, member, serving
from support.rooms import (
    UNLIMITED_GIFTS,
    acked,
    credit_event,
    end_room,
    first_gift,
    gift_event,
    reopen,
    room_goes,
    until,
)

# -- boards and badges -------------------------------------------------------------------------


async def test_top_three_gifters_get_rank_badges_leaderboards_follow_and_credits_say_whom_to_thank(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    users = [await api.user(coins=2000) for _ in range(4)]
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        host_ws = await member(stack, server, host, room)
        plain = await member(stack, server, await api.user(), room)
        extras = await member(stack, server, await api.user(), room, extras=True)
        ws = [await member(stack, server, u, room) for u in users]
        u1, u2, u3, u4 = range(4)
        plan = [
            (u1, "swan"),  # u1 699: rank 1
            (u2, "money_gun"),  # u2 500: rank 2
            (u3, "corgi"),  # u3 299: rank 3
            (u4, "confetti"),  # u4 100: rank 4, no badge
            (u4, "fireworks"),  # u4 1188: rank 1, a big gift
            (u1, "confetti"),  # u1 799: rank 2, neither new nor big
        ]
        acks = [await acked(ws[s], room, gift, f"g-{i}") for i, (s, gift) in enumerate(plan)]

        last = acks[-1]["event"]
        frames: list[Frame] = []
        await until(plain, gift_event(last), frames)
        shown = [first_gift(frames, a["event"]) for a in acks]
        assert [f["from"] for f in shown] == [users[s].user for s, _ in plan]
        assert [f.get("badge") for f in shown] == [
            {"rank": 1, "supporter": False},
            {"rank": 2, "supporter": False},
            {"rank": 3, "supporter": False},
            None,
            {"rank": 1, "supporter": False},
            {"rank": 2, "supporter": False},
        ]
        assert not [f for f in frames if f["t"] == "leaderboard"], "leaderboards are extras"

        credits = [await until(host_ws, credit_event(a["event"])) for a in acks]
        assert [c.get("thank") for c in credits] == ["new", "new", "new", "new", "big", None]

        final = [
            {"user": users[u4].user, "name": "t-viewer", "coins": 1188},
            {"user": users[u1].user, "name": "t-viewer", "coins": 799},
            {"user": users[u2].user, "name": "t-viewer", "coins": 500},
            {"user": users[u3].user, "name": "t-viewer", "coins": 299},
        ]
        seen: list[Frame] = []
        await until(extras, lambda f: f["t"] == "leaderboard" and f["top"] == final, seen)
        boards = [f for f in seen if f["t"] == "leaderboard"]
        for board in boards:
            assert board["room"] == room
            coins = [entry["coins"] for entry in board["top"]]
            assert coins == sorted(coins, reverse=True), boards
        assert first_gift(seen, last)["badge"] == {"rank": 2, "supporter": False}


async def test_a_viewer_becomes_a_supporter_once_all_time_coins_reach_the_setting(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_SUPPORTER_COINS": "300"}
    async with (
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (server, api),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        fan = await api.user(coins=5000)
        rivals = [await api.user(coins=1000) for _ in range(3)]
        room = await api.open_room(host)
        watcher = await member(stack, server, await api.user(), room, extras=True)
        fan_ws = await member(stack, server, fan, room)
        rival_ws = [await member(stack, server, u, room) for u in rivals]
        frames: list[Frame] = []

        # Session 1: 200 coins in all, below the threshold.
        early = [await acked(fan_ws, room, "confetti", f"f-{i}") for i in range(2)]
        await end_room(api, host, room)
        await until(watcher, room_goes(room, live=False), frames)
        await reopen(api, host)
        await until(watcher, room_goes(room, live=True), frames)
        # Session 2: three rivals above the fan in this session, each below the threshold.
        await acked(rival_ws[0], room, "rosa", "r-0", 15)  # 150
        await acked(rival_ws[1], room, "rosa", "r-1", 20)  # 200
        await acked(rival_ws[2], room, "corgi", "r-2")  # 299
        reached = await acked(fan_ws, room, "confetti", "f-2")  # all time: exactly 300
        top = await acked(fan_ws, room, "train", "f-3")  # session: 999, rank 1

        await until(watcher, gift_event(top["event"]), frames)
        badges = [first_gift(frames, a["event"]).get("badge") for a in [*early, reached, top]]
        assert badges == [
            {"rank": 1, "supporter": False},
            {"rank": 1, "supporter": False},
            {"supporter": True},
            {"rank": 1, "supporter": True},
        ]
        rival_badges = [
            f.get("badge") for f in frames if f["t"] == "gift" and f["from"] != fan.user
        ]
        assert rival_badges and all(b is not None and not b["supporter"] for b in rival_badges)
