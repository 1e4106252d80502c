"""Several server processes on one store, and a server restarted on its embedded store."""

from pathlib import Path

from giftstream.store.embedded import EmbeddedValkey, is_running
from support import ServerProcess, raw_connected, serving, shut_down_leftover_valkey

RECV_S = 15.0


async def test_a_room_spans_two_server_processes_sharing_one_store(
    valkey: EmbeddedValkey,
) -> None:
    async with (
        serving(ServerProcess(valkey.url)) as (a, api_a),
        serving(ServerProcess(valkey.url)) as (b, api_b),
    ):
        host = await api_b.user(role="host")
        viewer = await api_a.user(coins=1000)
        third = await api_a.user()
        viewer_b = await api_b.user(coins=1000)
        room = await api_b.open_room(host)
        async with (
            raw_connected(b, host) as host_ws,
            raw_connected(a, viewer) as viewer_ws,
            raw_connected(a, third) as third_ws,
            raw_connected(b, viewer_b) as viewer_b_ws,
        ):
            for ws in (host_ws, viewer_ws, third_ws, viewer_b_ws):
                await ws.join(room)

            ack = await viewer_ws.gift(room, "confetti", "across-1", timeout=RECV_S)
            assert ack["t"] == "ack" and ack["coins"] == 900, ack
            gift, _ = await host_ws.recv_until(lambda f: f["t"] == "gift", RECV_S)
            credit, _ = await host_ws.recv_until(lambda f: f["t"] == "credit", RECV_S)
            seen, _ = await third_ws.recv_until(lambda f: f["t"] == "gift", RECV_S)
            # And the other way: a viewer on B, watched from A.
            back = await viewer_b_ws.gift(room, "hand_hearts", "across-2", timeout=RECV_S)
            assert back["t"] == "ack", back
            seen_back, between = await third_ws.recv_until(
                lambda f: f["t"] == "gift" and f["event"] == back["event"], RECV_S
            )

        assert (gift["event"], gift["from"], gift["to"], gift["coins"]) == (
            ack["event"],
            viewer.user,
            host.user,
            100,
        )
        assert (credit["event"], credit["diamonds"], credit["total"]) == (ack["event"], 100, 100)
        assert seen["event"] == ack["event"] and seen["offset"] == gift["offset"]
        assert seen_back["from"] == viewer_b.user
        assert [f for f in between if f["t"] == "credit"] == [], "only the host gets credits"
        for api in (api_a, api_b):
            assert (await api.wallet(viewer))["coins"] == 900
            assert (await api.wallet(host))["diamonds"] == 200


async def test_stopping_a_server_stops_the_embedded_valkey_it_started(short_tmp: Path) -> None:
    data = short_tmp / "data"
    try:
        async with serving(ServerProcess(redis_url=None, data_dir=data)) as (_, api):
            assert is_running(data)
            await api.user(coins=1)
        left_running = is_running(data)
    finally:
        await shut_down_leftover_valkey(data)
    assert not left_running, "SIGTERM to `giftstream serve` left its embedded Valkey running"


async def test_balances_tokens_and_gift_ids_survive_a_restart_on_the_embedded_store(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    try:
        async with serving(ServerProcess(redis_url=None, data_dir=data)) as (first, api):
            host = await api.user(role="host")
            viewer = await api.user(coins=1000)
            room = await api.open_room(host)
            async with (
                raw_connected(first, host) as host_ws,
                raw_connected(first, viewer) as viewer_ws,
            ):
                await host_ws.join(room)
                await viewer_ws.join(room)
                ack = await viewer_ws.gift(room, "money_gun", "before-restart", timeout=RECV_S)
                await host_ws.recv_until(lambda f: f["t"] == "credit", RECV_S)
            viewer_before = await api.wallet(viewer)
            host_before = await api.wallet(host)
        assert ack["t"] == "ack" and ack["coins"] == 500, ack
        assert (viewer_before["coins"], host_before["diamonds"]) == (500, 500)
        # A Valkey left running would be reused by the next server, and the restart would
        # prove nothing (the server should stop it: see the test above).
        await shut_down_leftover_valkey(data)

        async with serving(ServerProcess(redis_url=None, data_dir=data)) as (second, api):
            assert await api.wallet(viewer) == viewer_before
            assert await api.wallet(host) == host_before
            async with (
                raw_connected(second, host) as host_ws,
                raw_connected(second, viewer) as viewer_ws,
            ):
                assert (viewer_ws.welcome["user"], viewer_ws.welcome["coins"]) == (
                    viewer.user,
                    500,
                )
                assert (host_ws.welcome["user"], host_ws.welcome["diamonds"]) == (host.user, 500)
                await host_ws.join(room)
                await viewer_ws.join(room)
                retried = await viewer_ws.gift(room, "money_gun", "before-restart", timeout=RECV_S)
                after = await viewer_ws.gift(room, "confetti", "after-restart", timeout=RECV_S)
                credit, skipped = await host_ws.recv_until(lambda f: f["t"] == "credit", RECV_S)
            assert retried == ack
            assert after["t"] == "ack" and after["coins"] == 400, after
            assert (credit["event"], credit["total"]) == (after["event"], 600)
            assert [f for f in skipped if f["t"] == "credit"] == []
            assert (await api.wallet(viewer))["coins"] == 400
    finally:
        await shut_down_leftover_valkey(data)
