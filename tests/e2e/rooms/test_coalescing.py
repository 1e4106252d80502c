"""Live rooms end to end: what a fast streak costs each viewer, coalesced per tick,
with real processes and a real Valkey."""

import asyncio
import contextlib
from dataclasses import dataclass

from giftstream.store.embedded import EmbeddedValkey
from support import Client, Frame, ServerProcess, member, serving
from support.rooms import (
    UNLIMITED_GIFTS,
    acked,
    answers,
    gift_event,
    is_end,
    of_streak,
    ping,
    send_gifts,
    until,
    viewers_are,
)

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
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (server, api),
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


# -- many streaks at once, protocol v1 ---------------------------------------------------------

STREAKERS = 8
TAPS_EACH = 60
V1_VIEWERS = 20


@dataclass(frozen=True)
class WatchedMany:
    messages: int
    ends: dict[str, Frame]
    credits: list[int]
    elapsed_s: float


async def watch_streaks(client: Client, senders: set[str], t0: float, credits: int) -> WatchedMany:
    """Count a protocol-v1 member's messages until every sender's streak ended and `credits`
    credits came (the host's)."""
    loop = asyncio.get_running_loop()
    messages = 0
    ends: dict[str, Frame] = {}
    offsets: list[int] = []
    while set(ends) != senders or len(offsets) < credits:
        message = await client.recv_frame(timeout=60)
        messages += 1
        for frame in message["frames"] if message["t"] == "batch" else [message]:
            assert frame["t"] in ("gift", "credit"), f"protocol v1 frames only: {frame}"
            if frame["t"] == "credit":
                offsets.append(frame["offset"])
            elif is_end(frame) and frame["from"] in senders:
                ends[frame["from"]] = frame
    return WatchedMany(messages, ends, offsets, loop.time() - t0)


async def test_many_streaks_at_once_cost_a_v1_member_one_message_a_tick(
    valkey: EmbeddedValkey,
) -> None:
    """Each protocol-v1 member gets at most one message a tick, a `batch` when the tick holds
    several frames, however many senders tap at once; the host gets every credit once, in
    offset order, and every streak ends with its exact total."""
    env = {
        "GIFTSTREAM_COALESCE_TICK_MS": str(TICK_MS),
        "GIFTSTREAM_STREAK_TIMEOUT_MS": str(STREAK_QUIET_MS),
    }
    async with (
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (server, api),
        contextlib.AsyncExitStack() as stack,
    ):
        host = await api.user(role="host")
        tappers = await asyncio.gather(*(api.user(coins=TAPS_EACH) for _ in range(STREAKERS)))
        users = await asyncio.gather(*(api.user() for _ in range(V1_VIEWERS)))
        room = await api.open_room(host)
        host_ws = await member(stack, server, host, room)
        senders = [await member(stack, server, t, room) for t in tappers]
        viewers = await asyncio.gather(*(member(stack, server, u, room) for u in users))
        await asyncio.gather(*(ping(c) for c in [host_ws, *senders, *viewers]))

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        names = {t.user for t in tappers}
        total = STREAKERS * TAPS_EACH
        watching = [asyncio.create_task(watch_streaks(v, names, t0, 0)) for v in viewers]
        hosting = asyncio.create_task(watch_streaks(host_ws, names, t0, total))
        try:
            sent = await asyncio.gather(
                *(burst(s, room, f"many{k}", TAPS_EACH) for k, s in enumerate(senders))
            )
            watched = await asyncio.gather(*watching, hosting)
        finally:
            for task in [*watching, hosting]:
                task.cancel()
            await asyncio.gather(*watching, hosting, return_exceptions=True)

        acks = [a for by_id in sent for a in by_id.values()]
        assert [a["t"] for a in acks] == ["ack"] * total
        allowed_per_s = 1000 / TICK_MS + SLACK_PER_S
        rates = [w.messages / w.elapsed_s for w in watched]
        most = max(w.messages for w in watched)
        report = (
            f"messages per member per s: max {max(rates):.1f}, allowed {allowed_per_s:.0f};"
            f" messages per member: max {most} for {total} gifts"
        )
        assert max(rates) <= allowed_per_s, report
        assert most * 4 <= total, report
        for w in watched:
            assert {e["streak"]["repeat"] for e in w.ends.values()} == {TAPS_EACH}, w.ends
        credits = watched[-1].credits
        assert credits == sorted(credits) and len(set(credits)) == total, report
