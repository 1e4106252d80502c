"""Live rooms end to end: broadcast gifts, announced in the live rooms of their region,
with real processes and a real Valkey."""

import contextlib

from giftstream.store.embedded import EmbeddedValkey
from support import Api, Frame, ServerProcess, member, serving
from support.rooms import (
    UNLIMITED_GIFTS,
    acked,
    end_room,
    gift_event,
    presence_of,
    room_goes,
    until,
)

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
        serving(ServerProcess(valkey.url, env=UNLIMITED_GIFTS)) as (second, _),
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
