"""A gift end to end: debit, credit, fan-out, acks, over real WebSockets and a real Valkey."""

from support import Api, Client, ServerProcess, on_both_stores

server = on_both_stores()


async def test_gift_debits_viewer_credits_host_and_room_sees_it(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=100)
    room = await api.open_room(host)
    host_ws = await Client.open(server.ws_url)
    viewer_ws = await Client.open(server.ws_url)
    try:
        await host_ws.auth(host)
        await host_ws.join(room)
        welcome = await viewer_ws.auth(viewer)
        assert welcome["coins"] == 100
        await viewer_ws.join(room)

        ack = await viewer_ws.gift(room, "finger_heart", "g-1", count=2)

        assert ack == {"t": "ack", "id": "g-1", "event": ack["event"], "coins": 90}
        seen, _ = await host_ws.recv_until(lambda f: f["t"] == "gift")
        assert (seen["room"], seen["event"], seen["from"], seen["to"]) == (
            room,
            ack["event"],
            viewer.user,
            host.user,
        )
        assert (seen["gift"], seen["count"], seen["coins"]) == ("finger_heart", 2, 10)
        assert seen["streak"]["repeat"] == 2
        credit, _ = await host_ws.recv_until(lambda f: f["t"] == "credit")
        assert (credit["event"], credit["diamonds"], credit["total"]) == (ack["event"], 10, 10)
        assert credit["offset"] > seen["offset"]
        assert (await api.wallet(viewer))["coins"] == 90
        assert (await api.wallet(host))["diamonds"] == 10
    finally:
        await host_ws.close()
        await viewer_ws.close()
