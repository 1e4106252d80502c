"""A graceful shutdown (SIGTERM): clients are told to reconnect elsewhere, and gifts in flight
are finished, not cut in half."""

import signal

from websockets.exceptions import ConnectionClosed

from giftstream.store import keys
from giftstream.store.connection import connect
from giftstream.store.embedded import EmbeddedValkey
from support import SHARED_ENV, Api, Client, ServerProcess, running

GIFTS = 60


async def test_sigterm_closes_with_1012_and_finishes_the_gifts_in_flight(
    fresh_valkey: EmbeddedValkey,
) -> None:
    server = ServerProcess(fresh_valkey.url, env=SHARED_ENV).start()
    try:
        api = Api(server.base_url)
        try:
            host, viewer = await api.user(role="host"), await api.user(coins=1000)
            room = await api.open_room(host)
        finally:
            await api.aclose()
        ws = await Client.open(server.ws_url)
        await ws.auth(viewer)
        await ws.join(room)
        for i in range(GIFTS):
            await ws.send({"t": "gift", "id": f"g{i}", "room": room, "gift": "rose"})
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        acked = set()
        try:
            while True:
                frame = await ws.recv(timeout=20)
                if frame["t"] == "ack":
                    acked.add(frame["id"])
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1012
        assert server.wait_exit() == 0
    finally:
        server.stop()

    redis = connect(fresh_valkey.url)
    try:
        # No gift was left between its debit and its credit.
        assert await redis.hlen(keys.outbox(viewer.user)) == 0
    finally:
        await redis.aclose()

    with running(ServerProcess(fresh_valkey.url, env=SHARED_ENV)) as again:
        ws = await Client.open(again.ws_url)
        try:
            await ws.auth(viewer)
            await ws.join(room)
            answers = [await ws.gift(room, "rose", f"g{i}") for i in range(GIFTS)]
        finally:
            await ws.close()
        api = Api(again.base_url)
        try:
            coins = (await api.wallet(viewer))["coins"]
            diamonds = (await api.wallet(host))["diamonds"]
        finally:
            await api.aclose()
    assert [a["t"] for a in answers] == ["ack"] * GIFTS
    assert acked <= {a["id"] for a in answers}
    assert (coins, diamonds) == (1000 - GIFTS, GIFTS)
