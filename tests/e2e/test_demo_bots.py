"""The demo's bot viewers (demo.py), which speak protocol v1 with a sender of their own: a bot
joins its room and gifts, and comes back and gifts again after its connection is cut."""

import asyncio

from giftstream.demo import RETRY_S, DemoBot
from giftstream_client import CreditEvent, Event
from support import Api, ServerProcess, connected, first_event
from support.proxy import Proxy

# A bot waits up to 6 s before a burst of gifts, and RETRY_S before it reconnects.
BOT_GIFTS_WITHIN_S = 6.0 + RETRY_S + 15.0


async def test_a_demo_bot_gifts_in_its_room_and_gifts_again_after_its_connection_is_cut(
    server: ServerProcess, api: Api, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=1_000_000)
    room = await api.open_room(host)

    def from_bot(event: Event) -> bool:
        return isinstance(event, CreditEvent) and event.sender == viewer.user

    async with connected(server, host) as host_ws:
        await host_ws.join(room)
        bot = asyncio.create_task(DemoBot("bot", viewer.token, room).run(proxy.url))
        try:
            before, _ = await first_event(host_ws, from_bot, timeout=BOT_GIFTS_WITHIN_S)
            connections = proxy.accepted
            proxy.cut_all()

            after, _ = await first_event(
                host_ws,
                lambda e: from_bot(e) and proxy.accepted > connections,
                timeout=BOT_GIFTS_WITHIN_S,
            )
        finally:
            bot.cancel()
            await asyncio.wait([bot])

    assert isinstance(before, CreditEvent) and isinstance(after, CreditEvent)
    assert after.offset > before.offset
    assert (await api.wallet(viewer))["coins"] < 1_000_000
