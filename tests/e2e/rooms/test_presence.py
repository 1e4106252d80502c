"""Live rooms end to end: viewer counts and presence across workers, and when workers die,
with real processes and a real Valkey."""

import asyncio
import contextlib

from giftstream.store.embedded import EmbeddedValkey
from support import Api, Frame, ServerProcess, User, member, poll, serving
from support.rooms import (
    SETTLE_S,
    UNLIMITED_GIFTS,
    acked,
    gift_event,
    presence_of,
    until,
    viewers_are,
)

# -- presence ----------------------------------------------------------------------------------

PRESENCE_TTL_S = 2


async def test_viewer_counts_and_presence_frames_add_up_across_two_workers(
    valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_PRESENCE_TTL_S": str(PRESENCE_TTL_S)}
    async with (
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (one, api),
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (two, _),
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
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (survivor, api),
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (doomed, _),
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
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (_survivor, api),
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (doomed, _),
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
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (server, api),
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
        serving(ServerProcess(valkey.url, env={**UNLIMITED_GIFTS, **env})) as (server, api),
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
