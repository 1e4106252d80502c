"""A gift end to end: debit, credit, fan-out, acks, over real WebSockets and a real Valkey."""

from giftstream_client import Ack, CreditEvent, GiftEvent
from support import Api, ServerProcess, connected, first_event, on_both_stores

server = on_both_stores()


async def test_gift_debits_viewer_credits_host_and_room_sees_it(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=100)
    room = await api.open_room(host)
    async with (
        connected(server, host) as host_ws,
        connected(server, viewer, receive_events=False) as viewer_ws,
    ):
        await host_ws.join(room)
        assert viewer_ws.welcome.coins == 100
        await viewer_ws.join(room)

        ack = await viewer_ws.send_gift(room, "finger_heart", count=2, id="g-1")

        assert ack == Ack(id="g-1", event=ack.event, coins=90)
        seen, _ = await first_event(host_ws, lambda e: isinstance(e, GiftEvent))
        assert isinstance(seen, GiftEvent)
        assert (seen.room, seen.event, seen.sender, seen.host) == (
            room,
            ack.event,
            viewer.user,
            host.user,
        )
        assert (seen.gift, seen.count, seen.coins) == ("finger_heart", 2, 10)
        assert seen.streak is not None and seen.streak.repeat == 2
        credit, _ = await first_event(host_ws, lambda e: isinstance(e, CreditEvent))
        assert isinstance(credit, CreditEvent)
        assert (credit.event, credit.diamonds, credit.total) == (ack.event, 10, 10)
        assert credit.offset > seen.offset
        assert (await api.wallet(viewer))["coins"] == 90
        assert (await api.wallet(host))["diamonds"] == 10
