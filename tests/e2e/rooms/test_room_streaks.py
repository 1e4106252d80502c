"""Live rooms end to end: streak combos, their ends and their retries,
with real processes and a real Valkey."""

import contextlib

from giftstream.store.embedded import EmbeddedValkey
from support import Api, ServerProcess, member, serving
from support.rooms import (
    UNLIMITED_GIFTS,
    acked,
    answers,
    first_gift,
    gift_event,
    is_end,
    of_streak,
    send_gifts,
    until,
)

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
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (one, api),
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (two, _),
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
