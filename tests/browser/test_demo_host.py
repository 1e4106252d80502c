"""The demo page's host studio in a real browser: credits, the diamond total, the session
summary, reconnection, cash-out, and the page's layout under load.

Screenshots of the views go to $TESTS_SCREENSHOTS_DIR (or a temporary folder).
"""

import asyncio
import contextlib
import re

import pytest
from playwright.async_api import BrowserContext, expect

from giftstream_client import Client
from support import Api, ServerProcess, bearer
from support.browser import (
    TIMEOUT_MS,
    TIMES,
    VIEWER_COINS,
    go_live,
    live_room,
    live_session,
    named_user,
    open_page,
    page_user,
    screenshot,
)
from support.proxy import Proxy

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)


async def test_the_host_studio_shows_every_credit_and_the_diamond_total(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    names = ("Mika", "Jonas", "Aiko", "Priya", "Omar")
    fans = [await named_user(page_api.http, name, coins=10_000) for name in names]
    plan = [(0, "rose", 6), (1, "corgi", 1), (2, "finger_heart", 3), (3, "doughnut", 2)]
    plan += [(4, "hand_hearts", 1), (0, "gg", 4), (3, "rosa", 2), (2, "perfume", 1)]
    prices = {"rose": 1, "gg": 1, "finger_heart": 5, "rosa": 10, "perfume": 20, "doughnut": 30}
    prices |= {"hand_hearts": 100, "corgi": 299}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                Client(page_server.ws_url, fan.token, receive_events=False)
            )
            for fan in fans
        ]
        for client in clients:
            await client.join(room)
        for fan, gift, count in plan:
            await clients[fan].send_gift(room, gift, count)

        total = sum(prices[gift] * count for _, gift, count in plan)
        credits = page.locator("#credit-feed li")
        await expect(credits).to_have_count(len(plan))
        await expect(credits.first).to_contain_text("Aiko")  # newest first
        diamonds = page.locator("#diamond-total")
        await expect(diamonds).to_have_attribute("data-diamonds", str(total))
        await expect(diamonds).to_have_text(f"{total:,}")
        await expect(page.locator("#money")).to_have_text(f"${total * 0.005:,.2f}")
        await expect(page.locator("#session-diamonds")).to_have_text(f"+{total:,}")
        thanks = page.locator("#thank-list li")
        await expect(thanks).to_have_count(len(fans))
        await expect(thanks.first).to_contain_text("Jonas")  # 299 diamonds, the most
        # The fans watch; the host is not one of its own viewers.
        await expect(page.locator("#host-viewers")).to_have_text(str(len(fans)))
        await screenshot(page, "host.png", animations="disabled")


async def test_ending_the_live_shows_a_session_summary_of_the_credits(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    mika = await named_user(page_api.http, "Mika", coins=1000)
    jonas = await named_user(page_api.http, "Jonas", coins=1000)
    async with (
        Client(page_server.ws_url, mika.token, receive_events=False) as m,
        Client(page_server.ws_url, jonas.token, receive_events=False) as j,
    ):
        await m.join(room)
        await j.join(room)
        await m.send_gift(room, "rose", 10)
        await j.send_gift(room, "corgi")
        await m.send_gift(room, "rose", 4)
    await expect(page.locator("#credit-feed li")).to_have_count(3)

    await page.locator("#end-live").click()

    summary = page.locator("#summary")
    await expect(summary).to_be_visible()
    await expect(summary.locator("#summary-diamonds")).to_have_text("313")
    await expect(summary.locator("#summary-gifts")).to_have_text("15")
    # Mika and Jonas watched at once (the host does not count): the server's peak.
    await expect(summary.locator("#summary-peak")).to_have_text("2")
    kinds = summary.locator("#summary-kinds")
    await expect(kinds.locator('li[data-gift="rose"]')).to_contain_text(f"Rose{TIMES}14")
    await expect(kinds.locator('li[data-gift="corgi"]')).to_contain_text(f"{TIMES}1")
    top = await summary.locator("#summary-top li").evaluate_all(
        "items => items.map(li => li.dataset.user)"
    )
    assert top == [jonas.user, mika.user]
    listed = (await page_api.http.get("/v1/rooms")).json()
    assert room not in [r["room"] for r in listed]
    await screenshot(page, "summary.png", animations="disabled")


async def test_a_dropped_connection_recovers_every_credit_exactly_once(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    proxy = await Proxy(page_server.port).start()
    try:
        page = await open_page(context, f"{proxy.base_url}/?host=1")
        room = await go_live(page)
        credits = page.locator("#credit-feed li")
        fan = await named_user(page_api.http, "Mika", coins=1000)
        async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
            await client.join(room)
            events = [(await client.send_gift(room, "rose")).event for _ in range(2)]
            await expect(credits).to_have_count(2)

            async with proxy.offline():
                await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
                events += [(await client.send_gift(room, "finger_heart")).event for _ in range(5)]

        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        await expect(credits).to_have_count(len(events))
        shown = await credits.evaluate_all("items => items.map(li => li.dataset.event)")
        assert sorted(shown) == sorted(events)
        await expect(page.locator("#diamond-total")).to_have_attribute("data-diamonds", "27")
    finally:
        await proxy.close()


async def test_a_live_without_gifts_ends_on_a_summary_without_empty_headings(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    await go_live(page)

    await page.locator("#end-live").click()

    summary = page.locator("#summary")
    await expect(summary).to_be_visible()
    await expect(summary.locator("#summary-nothing")).to_be_visible()
    await expect(summary.locator("#summary-cols")).to_be_hidden()
    await expect(summary.locator("#summary-peak")).to_have_text("0")


async def test_going_live_again_from_the_summary_starts_the_new_live_from_zero(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    fan = await named_user(page_api.http, "Noah", coins=1000)
    async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
        await client.join(room)
        await client.send_gift(room, "confetti")
        await expect(page.locator("#session-diamonds")).to_have_text("+100")
        await page.locator("#end-live").click()
        await expect(page.locator("#summary-diamonds")).to_have_text("100")

        await page.locator("#summary-again").click()

        await expect(page.locator("#studio")).to_be_visible()
        await expect(page.locator("#session-diamonds")).to_have_text("+0")
        await expect(page.locator("#thank-list li")).to_have_count(0)
        await client.send_gift(room, "rose", 2)
        await expect(page.locator("#session-diamonds")).to_have_text("+2")
        await expect(page.locator("#diamond-total")).to_have_attribute("data-diamonds", "102")
        await page.locator("#end-live").click()
        # The second LIVE's own summary, not the first one's.
        await expect(page.locator("#summary-diamonds")).to_have_text("2")


async def test_the_studio_opened_during_a_live_counts_from_the_lives_start_not_the_page_load(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    host = await named_user(page_api.http, "Aiko", role="host")
    opened = (await page_api.http.post("/v1/rooms", headers=bearer(host))).json()
    room, session = opened["room"], opened["session"]
    fan = await named_user(page_api.http, "Mika", coins=1000)
    async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
        await client.join(room)
        await client.send_gift(room, "corgi")
        await client.send_gift(room, "rose", 5)
        # The LIVE is some seconds old before the studio opens (a condition polled on the
        # server, not a pause).
        deadline = asyncio.get_running_loop().time() + 30
        while (await live_session(page_api, room, session))["duration_ms"] < 3000:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)

        page = await open_page(context, f"{page_server.base_url}/?host=1&token={host.token}")

        await expect(page.locator("#studio")).to_be_visible()
        await expect(page.locator("#session-diamonds")).to_have_text("+304")
        await expect(page.locator("#session-gifts")).to_have_text("6")
        timer = await page.locator("#live-timer").text_content()
        assert timer is not None and timer >= "00:03", timer
        # A gift after the page joined is added once to the server's figures.
        await client.send_gift(room, "finger_heart")
        await expect(page.locator("#session-diamonds")).to_have_text("+309")
        await expect(page.locator("#thank-list li")).to_have_count(1)
        await expect(page.locator("#thank-list li")).to_contain_text("309 coins given")


async def test_hosts_are_shown_by_their_display_name_on_the_stage_and_in_the_room_list(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    host = await named_user(page_api.http, "Priya Sings", role="host")
    room = await page_api.open_room(host)

    page = await open_page(context, f"{page_server.base_url}/?room={room}")

    await expect(page.locator("#host-name")).to_have_text("Priya Sings")
    await expect(page.locator("#host-avatar .avatar")).to_have_text("P")
    card = page.locator(f'.room-card[data-room="{room}"]')
    await expect(card.locator(".room-host")).to_have_text("Priya Sings")


async def test_the_host_cashes_out_from_the_studio_and_sees_the_payout_in_its_history(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    cash_out = page.locator("#cashout-btn")
    await expect(cash_out).to_be_disabled()  # under the minimum of 10,000 diamonds
    await expect(page.locator("#cashout-note")).to_have_text("Minimum 10,000 diamonds ($50.00)")
    fan = await named_user(page_api.http, "Omar", coins=20_000)
    async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
        await client.join(room)
        await client.send_gift(room, "interstellar")
        await client.send_gift(room, "rose", 200)
    await expect(page.locator("#diamond-total")).to_have_attribute("data-diamonds", "10200")
    await expect(cash_out).to_be_enabled()
    await expect(cash_out).to_have_text("Cash out $51.00")

    await cash_out.click()

    await expect(page.locator(".toast.success").last).to_contain_text(
        "Cashed out 10,200 diamonds: $51.00 is on its way."
    )
    await expect(page.locator("#diamond-total")).to_have_attribute("data-diamonds", "0")
    payouts = page.locator("#payout-list li")
    await expect(payouts).to_have_count(1)
    await expect(payouts.first).to_contain_text("10,200")
    await expect(page.locator("#payouts-empty")).to_be_hidden()
    await expect(cash_out).to_be_disabled()
    host = await page_user(page, "host")
    listed = (await page_api.http.get("/v1/payouts", headers=bearer(host))).json()
    assert [p["diamonds"] for p in listed] == [10_200]


async def test_a_gift_too_dear_opens_the_recharge_dialog_on_the_smallest_package_that_pays_it(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    prices = (await page_api.http.get("/v1/packages?region=US&channel=web")).json()
    dialog = page.locator("#recharge")
    selected = dialog.locator(".package.selected")

    # Lion (29,999 coins): 17,500 coins is the biggest package, and no package pays for it...
    await page.locator('.gift-tile[data-gift="lion"]').click()
    await expect(dialog).to_be_visible()
    await expect(selected).to_have_attribute("data-package", "custom")
    await expect(selected).to_contain_text(f"{29_999 - VIEWER_COINS:,}")
    await dialog.locator("#recharge-close").click()

    # ... a Swan (699 coins) after spending down to 600 is paid by the 350-coin package.
    fan_coins = VIEWER_COINS
    for gift, coins in (("fireworks", 1088), ("corgi", 299)):
        await page.locator(f'.gift-tile[data-gift="{gift}"]').click()
        fan_coins -= coins
        await expect(page.locator("#balance-value")).to_have_text(f"{fan_coins:,}")
    covering = min(
        (p for p in prices if p["total_coins"] + fan_coins >= 699), key=lambda p: p["coins"]
    )
    await page.locator('.gift-tile[data-gift="swan"]').click()
    await expect(dialog).to_be_visible()
    await expect(selected).to_have_attribute("data-package", covering["id"])

    await dialog.locator("#buy").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#balance-value")).to_have_text(
        f"{fan_coins + covering['total_coins']:,}"
    )


async def test_gift_tiles_show_whole_names_and_the_combo_bubble_inside_the_panel(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    cut = await page.locator(".tile-name").evaluate_all(
        "names => names"
        ".filter(n => n.scrollWidth > n.clientWidth || n.scrollHeight > n.clientHeight)"
        ".map(n => n.textContent)"
    )
    assert cut == []
    tile = page.locator('.gift-tile[data-gift="rose"]')  # the first row of the panel

    for _ in range(3):
        await tile.click()

    bubble = tile.locator(".tile-combo")
    await expect(bubble).to_have_text(f"{TIMES}3")
    await expect(bubble).to_have_class(re.compile(r"\bshow\b"))
    # Measured at rest: its pop (a scale-down from 1.9) and its fade-in are over.
    await bubble.evaluate("b => Promise.all(b.getAnimations().map(a => a.finished))")
    grid = await page.locator("#gift-grid").bounding_box()
    box = await bubble.bounding_box()
    assert grid is not None and box is not None
    assert grid["y"] <= box["y"] and box["y"] + box["height"] <= grid["y"] + grid["height"]
    assert grid["x"] <= box["x"] and box["x"] + box["width"] <= grid["x"] + grid["width"]


async def test_rows_arriving_in_a_busy_gifts_received_feed_never_slide_outside_it(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    fan = await named_user(page_api.http, "Lea", coins=1000)
    async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
        await client.join(room)
        for _ in range(3):
            await client.send_gift(room, "confetti")
    await expect(page.locator("#credit-feed li")).to_have_count(3)
    # Every row's entrance stays in place (a slide from the side was clipped by the feed).
    moving = await page.evaluate(
        """() => [...document.querySelectorAll('#credit-feed li')].flatMap(li =>
            li.getAnimations({ subtree: true }).flatMap(a => a.effect.getKeyframes())
              .filter(k => k.transform && k.transform !== 'none'))
              .length
           + [...document.styleSheets].flatMap(s => [...s.cssRules])
              .filter(r => r.name === 'credit-in')
              .flatMap(r => [...r.cssRules]).filter(k => k.style.transform).length"""
    )
    assert moving == 0
