"""The coin economy against the real server: gifts to a host's videos."""

from giftstream_client import CreditEvent, GiftEvent
from support import Api, ServerProcess, connected, first_event
from support.economy import (
    RECV_S,
    coins_of,
    diamonds_of,
    error,
    make_user,
    ok,
    unique,
    video_gift,
    video_of,
)

# --- gifts to videos --------------------------------------------------------------------------


async def test_a_gift_to_a_video_debits_the_sender_and_credits_the_host_without_animation(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    sender = await make_user(api, coins=1000)
    member = await make_user(api, coins=1)
    request = unique("video")
    async with connected(server, host) as host_ws, connected(server, member) as member_ws:
        await host_ws.join(room)
        await member_ws.join(room)

        sent = ok(await video_gift(api, sender, video, "confetti", request))
        retried = ok(await video_gift(api, sender, video, "confetti", request))

        credit, _ = await first_event(host_ws, lambda e: isinstance(e, CreditEvent), RECV_S)
        # A live gift after it: every event the member got before this one's animation.
        fence = await member_ws.send_gift(room, "rose", id=unique("fence"))
        _, before = await first_event(
            member_ws, lambda e: isinstance(e, GiftEvent) and e.event == fence.event, RECV_S
        )

    assert sent == {"id": request, "event": sent["event"], "coins": 900, "video": video}
    assert retried == sent
    assert isinstance(credit, CreditEvent)
    assert (credit.event, credit.video, credit.diamonds) == (sent["event"], video, 100)
    assert (credit.sender, credit.gift, credit.coins) == (sender.user, "confetti", 100)
    assert [e for e in before if isinstance(e, GiftEvent | CreditEvent)] == []
    assert await coins_of(api, sender) == 900
    assert await diamonds_of(api, host) == 101


async def test_a_gift_to_a_video_of_a_host_who_never_went_live_credits_the_host(
    api: Api,
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    sender = await make_user(api, coins=300)

    sent = ok(await video_gift(api, sender, video, "corgi", unique("video")))

    assert sent["coins"] == 1
    assert await diamonds_of(api, host) == 299


async def test_gifts_to_videos_refuse_unknown_videos_gifts_and_short_balances(api: Api) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    sender = await make_user(api, coins=50)

    error(await video_gift(api, sender, "vnope", "rose", unique("v")), 404, "not_found")
    error(await video_gift(api, sender, video, "unicorn", unique("v")), 404, "unknown_gift")
    error(await video_gift(api, sender, video, "confetti", unique("v")), 402, "insufficient_coins")
    error(await video_gift(api, host, video, "rose", unique("v")), 403, "forbidden")
    assert await coins_of(api, sender) == 50
    assert await diamonds_of(api, host) == 0


async def test_a_gift_id_used_live_is_a_conflict_when_sent_again_to_a_video(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    viewer = await make_user(api, coins=500)
    request = unique("both")
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        live = await ws.send_gift(room, "confetti", id=request)
    assert (live.id, live.coins) == (request, 400)

    again = await video_gift(api, viewer, video, "confetti", request)

    # Same id, other content (a video instead of the live room): not the same request.
    error(again, 409, "idempotency_conflict")
