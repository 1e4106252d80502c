"""Live rooms end to end: session summaries, and a reopened room — real processes, real Valkey."""

import contextlib

from support import Api, Frame, ServerProcess, member
from support.rooms import acked, end_room, reopen, room_goes, session, until

# -- sessions ----------------------------------------------------------------------------------


async def test_session_summary_has_the_exact_numbers_and_a_reopened_room_starts_afresh(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    a, b, c = [await api.user(coins=1000) for _ in range(3)]
    opened = await reopen(api, host)
    room, first = opened["room"], opened["session"]
    assert first == 1
    async with contextlib.AsyncExitStack() as stack:
        host_ws = await member(stack, server, host, room, extras=True)
        viewer_ws = await member(stack, server, await api.user(), room, extras=True)
        senders = {u.user: await member(stack, server, u, room) for u in (a, b, c)}
        others = [await member(stack, server, await api.user(), room) for _ in range(3)]
        # Every connection but the host's: the host does not watch itself.
        peak = 1 + len(senders) + len(others)

        await acked(senders[a.user], room, "finger_heart", "a-1", 3)
        await acked(senders[a.user], room, "rose", "a-2")
        await acked(senders[a.user], room, "rose", "a-3")
        await acked(senders[b.user], room, "confetti", "b-1")
        await acked(senders[c.user], room, "rose", "c-1", 5)
        for other in others:
            await other.close()

        ended = await end_room(api, host, room)

        summary = ended["summary"]
        coins = 3 * 5 + 1 + 1 + 100 + 5
        assert (summary["t"], summary["room"], summary["session"]) == (
            "session_summary",
            room,
            first,
        )
        assert (summary["diamonds"], summary["coins"], summary["gifts"]) == (coins, coins, 11)
        by_kind = {g["gift"]: g["count"] for g in summary["gifts_by_kind"]}
        assert by_kind == {"finger_heart": 3, "rose": 7, "confetti": 1}
        assert len(summary["gifts_by_kind"]) == 3
        assert summary["top_gifters"] == [
            {"user": b.user, "name": "t-viewer", "coins": 100},
            {"user": a.user, "name": "t-viewer", "coins": 17},
            {"user": c.user, "name": "t-viewer", "coins": 5},
        ]
        assert summary["peak_viewers"] == peak
        assert 0 < summary["average_viewers"] <= peak
        assert summary["duration_ms"] > 0
        assert summary["ended"] - summary["started"] == summary["duration_ms"]
        assert await session(api, room, first) == summary
        assert (await end_room(api, host, room))["summary"] == summary  # ending again: the same
        assert await until(host_ws, lambda f: f["t"] == "session_summary") == summary
        # Only the host gets the summary; the room frame published with it goes to all.
        seen: list[Frame] = []
        await until(viewer_ws, room_goes(room, live=False), seen)
        assert not [f for f in seen if f["t"] == "session_summary"]

        again = await reopen(api, host)
        assert (again["room"], again["session"]) == (room, first + 1)
        await until(host_ws, room_goes(room, live=True))
        fresh = await session(api, room, first + 1)
        assert fresh["live"] is True and fresh["session"] == first + 1
        numbers = ("diamonds", "coins", "gifts", "gifts_by_kind", "top_gifters")
        assert [fresh[k] for k in numbers] == [0, 0, 0, [], []]
        await acked(senders[c.user], room, "confetti", "c-2")
        live = await session(api, room, first + 1)
        assert [live[k] for k in numbers] == [
            100,
            100,
            1,
            [{"gift": "confetti", "count": 1}],
            [{"user": c.user, "name": "t-viewer", "coins": 100}],
        ]
        assert await session(api, room, first) == summary
        missing = await api.http.get(f"/v1/rooms/{room}/sessions/{first + 2}")
        assert missing.status_code == 404, missing.text
        await end_room(api, host, room)


async def test_a_live_session_summary_counts_the_credits_up_to_the_offset_it_names(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    opened = await reopen(api, host)
    room = opened["room"]
    async with contextlib.AsyncExitStack() as stack:
        sender = await member(stack, server, await api.user(coins=1000), room)
        await acked(sender, room, "confetti", "o-1")
        before = await session(api, room, opened["session"])
        await acked(sender, room, "rose", "o-2", 3)
        after = await session(api, room, opened["session"])

    # Each gift is two events (gift, credit): the credit of the second is at offset 4.
    assert (before["live"], before["diamonds"], before["offset"]) == (True, 100, 2)
    assert (after["diamonds"], after["gifts"], after["offset"]) == (103, 4, 4)
