"""Streaks seen by a room, and fan-out that survives a lost pub/sub connection."""

import asyncio

from giftstream.store.connection import Redis, command
from support import Api, Client, Frame, ServerProcess


def is_gift(frame: Frame) -> bool:
    return bool(frame["t"] == "gift")


async def test_streak_counts_each_tap_once_and_ends_after_the_quiet_timeout(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=100)
    room = await api.open_room(host)
    watcher = await Client.open(server.ws_url)
    sender = await Client.open(server.ws_url)
    try:
        await watcher.auth(host)
        await watcher.join(room)
        await sender.auth(viewer)
        await sender.join(room)
        for i in range(3):
            assert (await sender.gift(room, "rose", f"tap-{i}"))["t"] == "ack"
        await sender.gift(room, "rose", "tap-1")  # a retry: charged and counted once

        end, taps = await watcher.recv_until(lambda f: is_gift(f) and f["streak"]["end"])

        # Live updates may skip intermediate counts (coalescing); they only ever go up.
        repeats = [f["streak"]["repeat"] for f in taps if is_gift(f)]
        assert repeats == sorted(set(repeats)) and repeats[-1] == 3
        assert {f["streak"]["id"] for f in taps if is_gift(f)} == {end["streak"]["id"]}
        assert end["streak"] == {"id": taps[0]["event"], "repeat": 3, "end": True}
        assert (await api.wallet(viewer))["coins"] == 97
    finally:
        await watcher.close()
        await sender.close()


async def test_switching_gift_ends_the_streak_and_starts_another(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=100)
    room = await api.open_room(host)
    watcher = await Client.open(server.ws_url)
    sender = await Client.open(server.ws_url)
    try:
        await watcher.auth(host)
        await watcher.join(room)
        await sender.auth(viewer)
        await sender.join(room)
        await sender.gift(room, "rose", "a-1")
        await sender.gift(room, "rose", "a-2")
        await sender.gift(room, "gg", "b-1")

        end, _ = await watcher.recv_until(lambda f: is_gift(f) and f["streak"]["end"])
        first_gg, _ = await watcher.recv_until(lambda f: is_gift(f) and f["gift"] == "gg")

        assert (end["gift"], end["streak"]["repeat"]) == ("rose", 2)
        assert first_gg["streak"]["repeat"] == 1
        assert first_gg["streak"]["id"] != end["streak"]["id"]
    finally:
        await watcher.close()
        await sender.close()


async def test_credits_reach_the_host_exactly_once_after_the_pubsub_connection_is_killed(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=200)
    room = await api.open_room(host)
    host_ws = await Client.open(server.ws_url)
    sender = await Client.open(server.ws_url)
    try:
        await host_ws.auth(host)
        await host_ws.join(room)
        await sender.auth(viewer)
        await sender.join(room)

        await command(redis, "CLIENT", "KILL", "TYPE", "pubsub")
        acks = [
            await sender.gift(room, "confetti" if i == 0 else "rose", f"k-{i}") for i in range(5)
        ]
        assert all(a["t"] == "ack" for a in acks)

        credits: list[Frame] = []
        while len(credits) < 5:
            frame, _ = await host_ws.recv_until(lambda f: f["t"] == "credit", timeout=15)
            credits.append(frame)
        assert [c["event"] for c in credits] == [a["event"] for a in acks]
        offsets = [c["offset"] for c in credits]
        assert offsets == sorted(set(offsets))
        # Nothing more: a duplicate would arrive right behind the last credit.
        await host_ws.send({"t": "ping", "id": "p"})
        _, between = await host_ws.recv_until(lambda f: f["t"] == "pong")
        assert not [f for f in between if f["t"] == "credit"]
        ready = await api.http.get("/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        await host_ws.close()
        await sender.close()


async def test_the_room_counts_its_viewers_across_joins_and_leaves(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    room = await api.open_room(host)
    clients = [await Client.open(server.ws_url) for _ in range(3)]
    try:
        counts = []
        for client in clients:
            await client.auth(await api.user())
            counts.append((await client.join(room))["viewers"])
        assert counts == [1, 2, 3]
        await clients[0].request({"t": "leave", "room": room}, "left")
        await clients[1].close()
        latecomer = await Client.open(server.ws_url)
        try:
            await latecomer.auth(await api.user())
            # The closed connection's leave is processed asynchronously by the server.
            for _ in range(50):
                joined = await latecomer.join(room)
                if joined["viewers"] == 2:
                    break
                await asyncio.sleep(0.05)
            assert joined["viewers"] == 2
        finally:
            await latecomer.close()
    finally:
        for client in clients:
            await client.close()
