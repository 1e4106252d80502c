"""LIVE battles on the demo page, in a real browser: the split score bar moved by the gifts of
each room, the countdown, the winner banner; the host studio's invite, accept and end.

The screenshot `battle.png` goes to $TESTS_SCREENSHOTS_DIR (or a temporary folder).
"""

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from giftstream_client import Client
from support import Api, ServerProcess, User, bearer
from support.browser import TIMEOUT_MS, VIEWPORT, named_user, open_page, screenshot

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
async def other_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A second profile: another person (its own dev account) at the same time."""
    ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
    ctx.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    await ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def battle_of(api: Api, hosts: list[User], rooms: list[str]) -> str:
    r = await api.http.post(
        "/v1/battles", headers=bearer(hosts[0]), json={"rooms": [rooms[1]], "duration_s": 120}
    )
    assert r.status_code == 200, r.text
    battle: str = r.json()["battle"]
    r = await api.http.post(f"/v1/battles/{battle}/accept", headers=bearer(hosts[1]))
    assert r.status_code == 200, r.text
    return battle


async def test_gifts_in_each_room_move_their_side_of_the_bar_and_the_winner_is_announced(
    context: BrowserContext,
    page_server: ServerProcess,
    page_api: Api,
) -> None:
    hosts = [await named_user(page_api.http, name, role="host") for name in ("Mika", "Jonas")]
    rooms = [await page_api.open_room(h) for h in hosts]
    battle = await battle_of(page_api, hosts, rooms)
    page = await open_page(context, f"{page_server.base_url}/?room={rooms[0]}")
    bar = page.locator(f'#battle[data-battle="{battle}"]')
    await expect(bar).to_be_visible()
    mine, theirs = (
        bar.locator(f'.battle-side[data-room="{rooms[0]}"]'),
        bar.locator(f'.battle-side[data-room="{rooms[1]}"]'),
    )
    await expect(bar.locator(".battle-side").first).to_have_attribute("data-room", rooms[0])
    await expect(bar.locator(".battle-clock")).to_have_text(re.compile(r"^[12]:\d\d$"))

    fans = [await named_user(page_api.http, n, coins=1000) for n in ("Aiko", "Priya")]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                Client(page_server.ws_url, f.token, receive_events=False)
            )
            for f in fans
        ]
        await clients[0].join(rooms[0])
        await clients[1].join(rooms[1])
        await clients[0].send_gift(rooms[0], "rosa")  # 10 coins
        await clients[1].send_gift(rooms[1], "rose", 3)  # 3 coins
        await expect(mine.locator(".battle-score")).to_have_text("10")
        await expect(theirs.locator(".battle-score")).to_have_text("3")
        await clients[1].send_gift(rooms[1], "perfume")  # 20 coins: the other side leads
        await expect(theirs.locator(".battle-score")).to_have_text("23")

    r = await page_api.http.post(f"/v1/battles/{battle}/end", headers=bearer(hosts[0]))
    assert r.status_code == 200, r.text
    banner = bar.locator(".battle-banner")
    await expect(banner).to_contain_text("The other room wins")
    await expect(banner).to_have_attribute("data-winner", rooms[1])
    await expect(banner.locator(f'li[data-room="{rooms[1]}"]')).to_contain_text("Priya 23")
    await expect(bar.locator(".battle-clock")).to_have_text("ended")
    await screenshot(page, "battle.png", animations="disabled")


async def test_a_host_invites_from_the_studio_the_other_accepts_and_ending_it_shows_a_draw(
    context: BrowserContext,
    other_context: BrowserContext,
    page_server: ServerProcess,
) -> None:
    inviter = await open_page(context, f"{page_server.base_url}/?host=1")
    invitee = await open_page(other_context, f"{page_server.base_url}/?host=1")
    await inviter.locator("#golive-btn").click()
    await invitee.locator("#golive-btn").click()
    await expect(invitee.locator("#studio")).to_be_visible()
    other_room = await invitee.locator("#host-room").text_content()
    assert other_room

    choice = inviter.locator(f'#battle-room option[value="{other_room}"]')
    await inviter.locator("#battle-room").focus()
    await expect(choice).to_have_count(1)
    await inviter.locator("#battle-room").select_option(other_room)
    await inviter.locator("#battle-invite").click()
    await expect(inviter.locator("#battle-card")).to_have_attribute("data-state", "invited")
    await expect(inviter.locator("#battle-status")).to_contain_text("Waiting")

    accept = invitee.locator("#battle-accept")
    await expect(accept).to_be_visible()
    await accept.click()
    for page in (inviter, invitee):
        await expect(page.locator("#battle-card")).to_have_attribute("data-state", "started")
        await expect(page.locator("#battle .battle-side")).to_have_count(2)
    await invitee.locator("#battle-end").click()
    for page in (inviter, invitee):
        await expect(page.locator("#battle .battle-banner")).to_contain_text("draw")
        await expect(page.locator("#battle-card")).to_have_attribute("data-state", "idle")
