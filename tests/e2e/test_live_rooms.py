"""Live rooms end to end: streak combos, coalescing under a fast streak, session summaries, boards
and badges, presence across workers, and broadcast gifts — real processes, real Valkey."""

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from giftstream.store.embedded import EmbeddedValkey
from support import Api, Client, Frame, ServerProcess, User, bearer, member, poll, serving

# A deadline for conditions that settle in the background (presence expiry, pub/sub hops).
SETTLE_S = 15.0
# Tests gift as fast as they can; the gift rate limit has tests of its own.
UNLIMITED_GIFTS = {"GIFTSTREAM_GIFT_RATE_PER_S": "100000", "GIFTSTREAM_GIFT_BURST": "1000000"}


# -- helpers -----------------------------------------------------------------------------------


def streak_of(frame: Frame) -> dict[str, Any] | None:
    streak = frame.get("streak") if frame["t"] == "gift" else None
    return streak if isinstance(streak, dict) else None


def is_end(frame: Frame, streak_id: str | None = None) -> bool:
    streak = streak_of(frame)
    return (
        streak is not None
        and bool(streak["end"])
        and (streak_id is None or streak["id"] == streak_id)
    )


def of_streak(streak_id: str) -> Callable[[Frame], bool]:
    def match(frame: Frame) -> bool:
        streak = streak_of(frame)
        return streak is not None and streak["id"] == streak_id

    return match


def gift_event(event: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "gift" and f["event"] == event


def credit_event(event: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "credit" and f["event"] == event


def first_gift(frames: Sequence[Frame], event: str) -> Frame:
    """The live gift frame of `event` (not the copy that ends its streak)."""
    return next(f for f in frames if gift_event(event)(f) and not is_end(f))


async def send_gifts(client: Client, room: str, taps: Sequence[tuple[str, str, int]]) -> None:
    """Send gift frames (id, gift, count) back to back, without waiting for answers."""
    for rid, gift, count in taps:
        await client.send({"t": "gift", "id": rid, "room": room, "gift": gift, "count": count})


async def answers(client: Client, ids: Sequence[str], timeout: float = 30.0) -> dict[str, Frame]:
    """The `ack` or `error` of each request id, whatever comes in between."""
    wanted = set(ids)
    got: dict[str, Frame] = {}
    while wanted - set(got):
        frame, _ = await client.recv_until(
            lambda f: f["t"] in ("ack", "error") and f.get("id") in wanted, timeout
        )
        assert frame["id"] not in got, f"two answers to {frame['id']}"
        got[frame["id"]] = frame
    return got


async def acked(client: Client, room: str, gift: str, rid: str, count: int = 1) -> Frame:
    ack = await client.gift(room, gift, rid, count)
    assert ack["t"] == "ack", ack
    return ack


async def end_room(api: Api, host: User, room: str) -> Frame:
    r = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(host))
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def reopen(api: Api, host: User) -> Frame:
    r = await api.http.post("/v1/rooms", headers=bearer(host))
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def session(api: Api, room: str, session_id: int) -> Frame:
    r = await api.http.get(f"/v1/rooms/{room}/sessions/{session_id}")
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def until(
    client: Client,
    match: Callable[[Frame], bool],
    seen: list[Frame] | None = None,
    timeout: float = SETTLE_S,
) -> Frame:
    """The first frame matching; every frame received on the way (it too) is added to `seen`."""
    frame, before = await client.recv_until(match, timeout)
    if seen is not None:
        seen.extend([*before, frame])
    return frame


def room_goes(room: str, live: bool) -> Callable[[Frame], bool]:
    """The `room` frame that sets the room live or not (extras members only)."""
    return lambda f: f["t"] == "room" and f["room"] == room and f["live"] is live


def viewers_are(count: int) -> Callable[[Frame], bool]:
    """A `viewers` frame with `count` (extras members only)."""
    return lambda f: f["t"] == "viewers" and f["viewers"] == count


def presence_of(user: User, joined: bool) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "presence" and f["user"] == user.user and f["joined"] is joined


async def ping(client: Client) -> None:
    pong = await client.request({"t": "ping", "id": "barrier"}, "pong")
    assert pong["t"] == "pong", pong


# -- streaks -----------------------------------------------------------------------------------


async def test_taps_with_counts_add_to_repeat_and_every_viewer_gets_one_end_after_the_timeout(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    tapper = await api.user(coins=100)
    other = await api.user(coins=100)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        watchers = [
            await member(stack, server, await api.user(), room),
            await member(stack, server, await api.user(), room, json_mode=True),
            await member(stack, server, await api.user(), room, extras=True),
        ]
        sender = await member(stack, server, tapper, room)

        acks = [await acked(sender, room, "rose", f"c-{i}", n) for i, n in enumerate((5, 1, 3))]

        streak_id = acks[0]["event"]
        for watcher in watchers:
            end, before = await watcher.recv_until(is_end)
            repeats = [f["streak"]["repeat"] for f in before if of_streak(streak_id)(f)]
            # Coalescing may skip updates; those shown count up by the taps' counts.
            assert repeats and set(repeats) <= {5, 6, 9}, repeats
            assert repeats == sorted(set(repeats)), repeats
            assert end["streak"] == {"id": streak_id, "repeat": 9, "end": True}
            assert (end["event"], end["count"], end["from"]) == (acks[2]["event"], 3, tapper.user)
        # Exactly one end: nothing more of the streak before a later gift of someone else.
        marker = await member(stack, server, other, room)
        done = await acked(marker, room, "confetti", "m-1")
        for watcher in watchers:
            _, between = await watcher.recv_until(gift_event(done["event"]))
            assert not [f for f in between if of_streak(streak_id)(f)], between
    assert (await api.wallet(tapper))["coins"] == 100 - 9


async def test_switching_gift_ends_the_combo_before_the_new_one_which_counts_its_own_taps(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    tapper = await api.user(coins=100)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        plain = await member(stack, server, await api.user(), room)
        extras = await member(stack, server, await api.user(), room, extras=True)
        sender = await member(stack, server, tapper, room)

        taps = [("s-1", "rose", 1), ("s-2", "rose", 1), ("s-3", "finger_heart", 2)]
        taps += [("s-4", "finger_heart", 1), ("s-5", "rose", 1)]
        acks = [await acked(sender, room, gift, rid, n) for rid, gift, n in taps]

        rose_1, heart, rose_2 = acks[0]["event"], acks[2]["event"], acks[4]["event"]
        for watcher in (plain, extras):
            last, before = await watcher.recv_until(lambda f: is_end(f, rose_2))
            frames = [*before, last]
            ends = [f["streak"] for f in frames if is_end(f)]
            assert ends == [
                {"id": rose_1, "repeat": 2, "end": True},
                {"id": heart, "repeat": 3, "end": True},
                {"id": rose_2, "repeat": 1, "end": True},
            ]
            # Each combo's end comes before the first frame of the combo that ended it.
            for ended, started in ((rose_1, heart), (heart, rose_2)):
                end_at = next(i for i, f in enumerate(frames) if is_end(f, ended))
                start_at = next(i for i, f in enumerate(frames) if of_streak(started)(f))
                assert end_at < start_at, frames
    assert (await api.wallet(tapper))["coins"] == 100 - (2 + 3 * 5 + 1)


async def test_a_non_streakable_gift_ends_the_combo_and_the_next_tap_starts_a_new_one(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    tapper = await api.user(coins=200)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        plain = await member(stack, server, await api.user(), room)
        extras = await member(stack, server, await api.user(), room, extras=True)
        sender = await member(stack, server, tapper, room)

        taps = [("n-1", "rose"), ("n-2", "rose"), ("n-3", "confetti"), ("n-4", "rose")]
        acks = [await acked(sender, room, gift, rid) for rid, gift in taps]

        combo, single, after = acks[0]["event"], acks[2]["event"], acks[3]["event"]
        for watcher in (plain, extras):
            last, before = await watcher.recv_until(lambda f: is_end(f, after))
            frames = [*before, last]
            ends = [f["streak"] for f in frames if is_end(f)]
            assert ends == [
                {"id": combo, "repeat": 2, "end": True},
                {"id": after, "repeat": 1, "end": True},
            ]
            single_frame = first_gift(frames, single)
            assert "streak" not in single_frame, single_frame
            end_at = next(i for i, f in enumerate(frames) if is_end(f, combo))
            assert end_at < frames.index(single_frame), frames
    assert (await api.wallet(tapper))["coins"] == 200 - (1 + 1 + 100 + 1)


async def test_retries_of_a_tap_on_two_connections_are_charged_and_counted_once(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    tapper = await api.user(coins=100)
    other = await api.user(coins=100)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        watcher = await member(stack, server, await api.user(), room)
        first = await member(stack, server, tapper, room)
        second = await member(stack, server, tapper, room)

        original = await acked(first, room, "rose", "t-1")
        # Concurrently: the same new tap on both connections, a third tap, and a retry.
        await send_gifts(first, room, [("t-2", "rose", 1), ("t-3", "rose", 1)])
        await send_gifts(second, room, [("t-2", "rose", 1), ("t-1", "rose", 1)])
        on_first = await answers(first, ["t-2", "t-3"])
        on_second = await answers(second, ["t-2", "t-1"])

        assert all(a["t"] == "ack" for a in [*on_first.values(), *on_second.values()])
        assert on_second["t-1"] == original
        assert on_second["t-2"] == on_first["t-2"]
        streak_id = original["event"]
        end, before = await watcher.recv_until(lambda f: is_end(f, streak_id))
        assert end["streak"]["repeat"] == 3
        repeats = [f["streak"]["repeat"] for f in before if of_streak(streak_id)(f)]
        assert repeats and max(repeats) <= 3 and len(repeats) == len(set(repeats)), repeats
        events = {f["event"] for f in before if of_streak(streak_id)(f)}
        assert events <= {original["event"], on_first["t-2"]["event"], on_first["t-3"]["event"]}

        # A late retry, after the end: answered as the first time, shown nowhere again.
        assert await second.gift(room, "rose", "t-3") == on_first["t-3"]
        marker = await member(stack, server, other, room)
        done = await acked(marker, room, "confetti", "m-1")
        _, between = await watcher.recv_until(gift_event(done["event"]))
        assert not [f for f in between if of_streak(streak_id)(f)], between
    assert (await api.wallet(tapper))["coins"] == 100 - 3
    assert (await api.wallet(host))["diamonds"] == 3 + 100


async def test_watchers_on_two_workers_see_the_same_streak_end_exactly_once(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_STREAK_TIMEOUT_MS": "400"}
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (one, api),
        serving(ServerProcess(valkey.url, env=env)) as (two, _),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        tapper = await api.user(coins=100)
        other = await api.user(coins=100)
        room = await api.open_room(host)
        watchers = [
            await member(stack, one, await api.user(), room),
            await member(stack, two, await api.user(), room),
            await member(stack, two, await api.user(), room, extras=True),
        ]
        sender = await member(stack, one, tapper, room)

        acks = [await acked(sender, room, "rose", f"w-{i}", n) for i, n in enumerate((1, 2, 1, 1))]

        streak_id = acks[0]["event"]
        for watcher in watchers:
            end = await until(watcher, is_end)
            assert end["streak"] == {"id": streak_id, "repeat": 5, "end": True}
            assert end["event"] == acks[-1]["event"]
        marker = await member(stack, two, other, room)
        done = await acked(marker, room, "confetti", "m-1")
        for watcher in watchers:
            _, between = await watcher.recv_until(gift_event(done["event"]))
            assert not [f for f in between if of_streak(streak_id)(f)], between


# -- coalescing --------------------------------------------------------------------------------

TICK_MS = 50
STREAK_QUIET_MS = 1500
TAPS = 400
SENDER_CONNECTIONS = 4
PLAIN_VIEWERS = 50
EXTRAS_VIEWERS = 50
# Frames a second a viewer may get beyond two a tick: a tick boundary, the streak's end, and
# what was still in flight from the joins. The measured interval is never shorter than the
# streak's quiet timeout, so this allows a handful of frames.
SLACK_PER_S = 5.0


@dataclass(frozen=True)
class Watched:
    messages: int
    end: Frame
    elapsed_s: float


async def watch_streak(client: Client, sender: str, t0: float) -> Watched:
    """Count the WebSocket messages a viewer gets until the end of `sender`'s streak."""
    loop = asyncio.get_running_loop()
    messages = 0
    while True:
        message = await client.recv_frame(timeout=60)
        messages += 1
        frames = message["frames"] if message["t"] == "batch" else [message]
        for frame in frames:
            if is_end(frame) and frame["from"] == sender:
                return Watched(messages, frame, loop.time() - t0)


async def credits_of(client: Client, sender: str, taps: int) -> tuple[list[str], Frame]:
    """The host's credits for `sender`'s gifts, until there are `taps` and the streak ended."""
    events: list[str] = []
    end: Frame | None = None
    while len(set(events)) < taps or end is None:
        frame = await client.recv(timeout=60)
        if frame["t"] == "credit" and frame["from"] == sender:
            events.append(frame["event"])
        elif is_end(frame) and frame["from"] == sender:
            end = frame
    return events, end


async def burst(client: Client, room: str, prefix: str, taps: int) -> dict[str, Frame]:
    ids = [f"{prefix}-{i}" for i in range(taps)]
    await send_gifts(client, room, [(rid, "rose", 1) for rid in ids])
    return await answers(client, ids, timeout=60)


async def test_a_fast_streak_costs_each_viewer_a_bounded_number_of_frames_per_second(
    valkey: EmbeddedValkey,
) -> None:
    env = {
        "GIFTSTREAM_COALESCE_TICK_MS": str(TICK_MS),
        "GIFTSTREAM_STREAK_TIMEOUT_MS": str(STREAK_QUIET_MS),
    }
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (server, api),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        tapper = await api.user(coins=TAPS)
        other = await api.user(coins=100)
        users = await asyncio.gather(*(api.user() for _ in range(PLAIN_VIEWERS + EXTRAS_VIEWERS)))
        room = await api.open_room(host)
        host_ws = await member(stack, server, host, room, extras=True)
        senders = [await member(stack, server, tapper, room) for _ in range(SENDER_CONNECTIONS)]
        plain = await asyncio.gather(
            *(member(stack, server, u, room) for u in users[:PLAIN_VIEWERS])
        )
        extras = await asyncio.gather(
            *(member(stack, server, u, room, extras=True) for u in users[PLAIN_VIEWERS:])
        )
        viewers = [*plain, *extras]
        # Let the joins' presence traffic settle before measuring.
        await until(extras[0], viewers_are(SENDER_CONNECTIONS + len(viewers)))
        await asyncio.gather(*(ping(c) for c in [host_ws, *senders, *viewers]))

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        watching = [asyncio.create_task(watch_streak(v, tapper.user, t0)) for v in viewers]
        crediting = asyncio.create_task(credits_of(host_ws, tapper.user, TAPS))
        try:
            per_sender = TAPS // SENDER_CONNECTIONS
            sent = await asyncio.gather(
                *(burst(s, room, f"tap{k}", per_sender) for k, s in enumerate(senders))
            )
            sending_s = loop.time() - t0
            watched = await asyncio.gather(*watching)
            credited, host_end = await crediting
        finally:
            for task in [*watching, crediting]:
                task.cancel()
            await asyncio.gather(*watching, crediting, return_exceptions=True)

        acks = [a for by_id in sent for a in by_id.values()]
        assert [a["t"] for a in acks] == ["ack"] * TAPS, [a for a in acks if a["t"] != "ack"]
        events = {a["event"] for a in acks}
        assert len(events) == TAPS
        # The host: every credit, exactly once each.
        assert sorted(credited) == sorted(events)
        streak_id = host_end["streak"]["id"]
        assert streak_id in events and host_end["streak"]["repeat"] == TAPS

        taps_per_s = TAPS / sending_s
        allowed_per_s = 2 * 1000 / TICK_MS + SLACK_PER_S
        rates = [w.messages / w.elapsed_s for w in watched]
        most = max(w.messages for w in watched)
        report = (
            f"taps/s {taps_per_s:.0f}; frames per viewer per s: max {max(rates):.1f},"
            f" allowed {allowed_per_s:.0f}; messages per viewer: max {most}"
        )
        for w in watched:
            assert w.end["streak"] == {"id": streak_id, "repeat": TAPS, "end": True}, w.end
            assert w.elapsed_s * 1000 >= STREAK_QUIET_MS, report
        assert max(rates) <= allowed_per_s, report
        assert max(rates) * 4 <= taps_per_s, report
        assert most * 4 <= TAPS, report

        # The end is the streak's final frame: nothing of it after, for anyone.
        marker = await member(stack, server, other, room)
        done = await acked(marker, room, "confetti", "m-1")
        for client in [*viewers, host_ws]:
            _, between = await client.recv_until(gift_event(done["event"]), timeout=30)
            assert not [f for f in between if of_streak(streak_id)(f)], between
            assert not [f for f in between if f["t"] == "credit" and f["event"] in events]
        assert (await api.wallet(tapper))["coins"] == 0
        assert (await api.wallet(host))["diamonds"] == TAPS + 100


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
        serving(ServerProcess(valkey.url, env=env)) as (server, api),
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


# -- presence ----------------------------------------------------------------------------------

PRESENCE_TTL_S = 2


async def test_viewer_counts_and_presence_frames_add_up_across_two_workers(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_PRESENCE_TTL_S": str(PRESENCE_TTL_S)}
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (one, api),
        serving(ServerProcess(valkey.url, env=env)) as (two, _),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        users = [await api.user() for _ in range(4)]
        room = await api.open_room(host)
        counts = []
        clients = []
        for user, server in zip(users, (one, two, one, two), strict=True):
            client = await member(stack, server, user, extras=True)
            counts.append((await client.join(room))["viewers"])
            clients.append(client)
        c1, c2, c3, c4 = clients
        assert counts == [1, 2, 3, 4]
        seen: list[Frame] = []
        await until(c1, viewers_are(4), seen)
        await until(c2, viewers_are(4))
        # The joins on the other worker show in this one's presence frames, in order.
        if not [f for f in seen if presence_of(users[3], True)(f)]:
            await until(c1, presence_of(users[3], True), seen)
        joins = [f["user"] for f in seen if f["t"] == "presence"]
        assert joins == [u.user for u in users], seen

        await c3.request({"t": "leave", "room": room}, "left")
        seen = []
        await until(c2, viewers_are(3), seen)
        if not [f for f in seen if presence_of(users[2], False)(f)]:
            await until(c2, presence_of(users[2], False), seen)
        await c4.close()
        await until(c1, viewers_are(2))
        late = await member(stack, two, await api.user())
        assert (await late.join(room))["viewers"] == 3


async def test_a_killed_worker_stops_counting_once_its_presence_expires(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_PRESENCE_TTL_S": str(PRESENCE_TTL_S)}
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (survivor, api),
        serving(ServerProcess(valkey.url, env=env)) as (doomed, _),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        room = await api.open_room(host)
        watcher = await member(stack, survivor, await api.user(), room, extras=True)
        for _ in range(2):
            await member(stack, doomed, await api.user(), room)
        await until(watcher, viewers_are(3))
        assert doomed.process is not None

        doomed.process.kill()
        await asyncio.to_thread(doomed.process.wait)

        # No leave ever comes from the dead worker: its share stops counting when it expires.
        await until(watcher, viewers_are(1))
        listed = (await api.http.get("/v1/rooms")).json()
        mine = {"room": room, "host": host.user, "live": True, "viewers": 1}
        assert any(listed_room.items() >= mine.items() for listed_room in listed), listed
        late = await member(stack, survivor, await api.user())
        assert (await late.join(room))["viewers"] == 2


async def listed_viewers(api: Api, room: str) -> int | None:
    """The room's viewer count in `GET /v1/rooms` (None while it is not listed)."""
    r = await api.http.get("/v1/rooms")
    assert r.status_code == 200, r.text
    return next((int(e["viewers"]) for e in r.json() if e["room"] == room), None)


async def listed_viewers_become(api: Api, room: str, count: int) -> None:
    await poll(
        lambda: listed_viewers(api, room),
        lambda listed: listed == count,
        SETTLE_S,
        f"GET /v1/rooms listing {count} viewers",
    )


async def test_a_room_served_only_by_a_killed_worker_counts_nobody_once_its_presence_expires(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_PRESENCE_TTL_S": str(PRESENCE_TTL_S)}
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (_survivor, api),
        serving(ServerProcess(valkey.url, env=env)) as (doomed, _),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        room = await api.open_room(host)
        for _ in range(2):
            await member(stack, doomed, await api.user(), room)
        await listed_viewers_become(api, room, 2)
        assert doomed.process is not None

        doomed.process.kill()
        await asyncio.to_thread(doomed.process.wait)

        # Nobody is left on a live worker: the count must still fall to 0 after the TTL.
        await listed_viewers_become(api, room, 0)


async def test_a_big_room_that_everyone_leaves_at_once_counts_nobody(
    valkey: EmbeddedValkey,
) -> None:
    env = {
        "GIFTSTREAM_PRESENCE_FRAMES_MAX_VIEWERS": "3",
        "GIFTSTREAM_PRESENCE_TTL_S": str(PRESENCE_TTL_S),
    }
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (server, api),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        room = await api.open_room(host)
        clients = [await member(stack, server, await api.user(), room) for _ in range(6)]
        await listed_viewers_become(api, room, 6)

        await asyncio.gather(*(c.close() for c in clients))

        await listed_viewers_become(api, room, 0)


async def test_presence_frames_stop_once_the_room_is_above_the_threshold(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_PRESENCE_FRAMES_MAX_VIEWERS": "3"}
    async with (
        serving(ServerProcess(valkey.url, env=env)) as (server, api),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        gifter = await api.user(coins=10)
        room = await api.open_room(host)
        watcher = await member(stack, server, await api.user(), room, extras=True)
        small = [await api.user() for _ in range(2)]
        for user in small:
            await member(stack, server, user, room)
        for user in small:
            await until(watcher, presence_of(user, True))
        gifter_ws = await member(stack, server, gifter, room)
        await until(watcher, viewers_are(4))  # above the threshold from now on

        frames: list[Frame] = []
        big = [await api.user() for _ in range(2)]
        late = [await member(stack, server, user, room) for user in big]
        await until(watcher, viewers_are(6), frames)
        await late[0].request({"t": "leave", "room": room}, "left")
        await until(watcher, viewers_are(5), frames)
        mark = await acked(gifter_ws, room, "rose", "p-1")
        await until(watcher, gift_event(mark["event"]), frames)

        later = {u.user for u in big}
        assert not [f for f in frames if f["t"] == "presence" and f["user"] in later], frames


# -- broadcast gifts ---------------------------------------------------------------------------


async def test_a_universe_is_announced_in_the_live_rooms_of_its_region_on_every_worker_only(
    server: ServerProcess, api: Api, valkey: EmbeddedValkey
) -> None:
    sender = await api.user(coins=44_999, region="US")
    hosts = {
        name: await api.user(role="host", region="GB" if name == "gb" else "US")
        for name in ("own", "us1", "us2", "gb", "ended")
    }
    rooms = {name: await api.open_room(host) for name, host in hosts.items()}
    async with (
        serving(ServerProcess(valkey.url)) as (second, _),
        contextlib.AsyncExitStack() as stack,
    ):
        # Room us2 is watched from another worker: every worker hears every region.
        watch = {
            name: await member(
                stack, second if name == "us2" else server, await api.user(), room, extras=True
            )
            for name, room in rooms.items()
        }
        plain_us1 = await member(stack, server, await api.user(), rooms["us1"])
        own_plain = await member(stack, server, await api.user(), rooms["own"])
        await end_room(api, hosts["ended"], rooms["ended"])
        await until(watch["ended"], room_goes(rooms["ended"], live=False))
        sender_ws = await member(stack, server, sender, rooms["own"])

        ack = await acked(sender_ws, rooms["own"], "tiktok_universe", "u-1")

        gift = await until(own_plain, gift_event(ack["event"]))
        assert (gift["gift"], gift["coins"], gift["from"], gift["to"]) == (
            "tiktok_universe",
            44_999,
            sender.user,
            hosts["own"].user,
        )
        for name in ("us1", "us2"):
            announced = await until(watch[name], lambda f: f["t"] == "broadcast")
            assert announced == {
                "t": "broadcast",
                "region": "US",
                "room": rooms["own"],
                "event": ack["event"],
                "from": sender.user,
                "from_name": "t-viewer",
                "gift": "tiktok_universe",
                "name": "TikTok Universe",
                "count": 1,
                "coins": 44_999,
            }
        # Later traffic in the other rooms comes with no announcement before it.
        for name in ("gb", "ended"):
            newcomer = await api.user()
            await member(stack, server, newcomer, rooms[name])
            frames: list[Frame] = []
            await until(watch[name], presence_of(newcomer, True), frames)
            assert not [f for f in frames if f["t"] == "broadcast"], (name, frames)
        rose = await api.user(coins=1)
        rose_ws = await member(stack, server, rose, rooms["us1"])
        mark = await acked(rose_ws, rooms["us1"], "rose", "r-1")
        frames = []
        await until(plain_us1, gift_event(mark["event"]), frames)
        assert not [f for f in frames if f["t"] == "broadcast"], "broadcast frames are extras"
    assert (await api.wallet(sender))["coins"] == 0
    assert (await api.wallet(hosts["own"]))["diamonds"] == 44_999


async def test_the_host_is_no_viewer_of_its_room_and_is_named_in_joined_and_the_list(
    server: ServerProcess, api: Api
) -> None:
    r = await api.http.post(
        "/v1/dev/users", json={"name": "Aiko Live", "region": "US", "role": "host"}
    )
    host = User(r.json()["user"], r.json()["token"])
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        host_ws = await member(stack, server, host, extras=True)
        joined = await host_ws.join(room)
        assert (joined["viewers"], joined["host_name"]) == (0, "Aiko Live")
        await listed_viewers_become(api, room, 0)

        viewer_ws = await member(stack, server, await api.user(), extras=True)
        assert (await viewer_ws.join(room))["viewers"] == 1
        await until(host_ws, viewers_are(1))
        await listed_viewers_become(api, room, 1)
        listed = next(e for e in (await api.http.get("/v1/rooms")).json() if e["room"] == room)
        assert (listed["host_name"], listed["session"]) == ("Aiko Live", joined["session"])


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
