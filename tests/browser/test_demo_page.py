"""The demo page in a real browser: Debian's Chromium driven by Playwright, against a real server.

Screenshots of the views go to $TESTS_SCREENSHOTS_DIR (or a temporary folder).
"""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from giftstream.store.embedded import EmbeddedValkey
from giftstream_client import Client
from support import Api, ServerProcess, User, bearer, running
from support import Client as RawClient
from support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    TIMES,
    VIEWER_COINS,
    VIEWPORT,
    named_user,
    open_page,
    page_token,
    screenshot,
    settle,
)
from support.proxy import Proxy

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's (`apt-get install chromium`, as .ci/run"
            " does) to run the browser tests"
        )
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


# Chests open and close sooner than by default, so a test sees their whole life.
CHEST_ENV = {"GIFTSTREAM_CHEST_COUNTDOWN_MS": "3000", "GIFTSTREAM_CHEST_CLAIM_MS": "6000"}


@pytest.fixture(scope="session")
def page_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """The service with its default streak timeout, which a person's taps fit in."""
    with running(ServerProcess(valkey.url, env=CHEST_ENV)) as s:
        yield s


@pytest.fixture
async def page_api(page_server: ServerProcess) -> AsyncIterator[Api]:
    async with Api(page_server.base_url) as client:
        yield client


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile (its own localStorage); an uncaught error in any page fails the test."""
    ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
    ctx.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    await ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def live_room(api: Api) -> str:
    return await api.open_room(await api.user(role="host"))


async def go_live(page: Page) -> str:
    await page.locator("#golive-btn").click()
    await expect(page.locator("#studio")).to_be_visible()
    room = await page.locator("#host-room").text_content()
    assert room
    return room


async def page_user(page: Page, view: str = "viewer") -> User:
    return User("", await page_token(page, view))


async def live_session(api: Api, room: str, session: int) -> dict[str, Any]:
    r = await api.http.get(f"/v1/rooms/{room}/sessions/{session}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- the viewer ------------------------------------------------------------------------------


async def test_a_tapped_gift_floats_up_on_the_stage_and_lowers_the_balance(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    balance = page.locator("#balance-value")
    await expect(balance).to_have_text(f"{VIEWER_COINS:,}")

    await page.locator('.gift-tile[data-gift="rose"]').click()

    await expect(page.locator('#stage .float[data-gift="rose"]').first).to_be_attached()
    await expect(page.locator("#stage .feed-line").last).to_contain_text("sent Rose")
    await expect(balance).to_have_text(f"{VIEWER_COINS - 1:,}")
    assert (await page_api.wallet(await page_user(page)))["coins"] == VIEWER_COINS - 1


async def test_rapid_taps_make_a_streak_with_a_combo_counter_that_ends(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    tile = page.locator('.gift-tile[data-gift="rose"]')

    for _ in range(5):
        await tile.click()

    banner = page.locator('#stage .banner[data-gift="rose"]')
    await expect(banner.locator(".combo")).to_have_text(f"{TIMES}5")
    await expect(tile.locator(".tile-combo")).to_have_text(f"{TIMES}5")
    # The streak's closing frame (`end: true`) comes once the taps stop.
    await expect(banner).to_have_class(re.compile(r"\bended\b"))
    await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS - 5:,}")


async def test_bigger_gifts_get_bigger_moments_up_to_full_screen(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    moment = page.locator("#moment")

    await page.locator('.gift-tile[data-gift="corgi"]').click()
    await expect(page.locator('#stage .pop[data-gift="corgi"]')).to_be_attached()
    await expect(moment).to_be_hidden()

    await page.locator('.gift-tile[data-gift="fireworks"]').click()
    await expect(moment).to_be_visible()
    await expect(moment).to_have_attribute("data-gift", "fireworks")
    await expect(moment.locator(".moment-gift")).to_have_text("Fireworks")
    await screenshot(page, "moment.png")
    await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS - 299 - 1088:,}")
    await expect(moment).to_be_hidden()


async def test_insufficient_coins_opens_the_recharge_dialog_and_a_test_purchase_adds_coins(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    prices = (await page_api.http.get("/v1/packages?region=US&channel=web")).json()
    smallest = next(p for p in prices if p["id"] == "coins_70")
    assert smallest["currency"] == "USD"

    await page.locator('.gift-tile[data-gift="lion"]').click()

    await expect(page.locator(".toast.error")).to_contain_text("Not enough coins for Lion")
    dialog = page.locator("#recharge")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#recharge-reason")).to_have_text("Lion costs 29,999 coins.")
    # The price list, and the exact amount missing (no package pays for a Lion).
    await expect(dialog.locator(".package")).to_have_count(len(prices) + 1)
    package = dialog.locator('.package[data-package="coins_70"]')
    await expect(package).to_contain_text(f"${smallest['price']}")
    await screenshot(page, "recharge.png", animations="disabled")

    await package.click()
    await dialog.locator("#test-receipt").select_option("test-decline")
    await dialog.locator("#buy").click()
    declined = page.locator(".toast.error").last
    await expect(declined).to_have_text(
        "Payment declined: the card was declined by its bank; nothing was charged"
    )
    await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS:,}")

    await dialog.locator("#test-receipt").select_option("")
    await dialog.locator("#buy").click()
    await expect(dialog).to_be_hidden()
    coins = VIEWER_COINS + smallest["total_coins"]
    await expect(page.locator(".toast.success")).to_contain_text(
        f"+{smallest['total_coins']} coins"
    )
    await expect(page.locator("#balance-value")).to_have_text(f"{coins:,}")
    assert (await page_api.wallet(await page_user(page)))["coins"] == coins


async def test_a_late_payment_is_credited_once_the_store_confirms_it(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    await page.locator("#balance").click()
    dialog = page.locator("#recharge")
    await dialog.locator('.package[data-package="coins_350"]').click()
    await dialog.locator("#test-receipt").select_option("test-late")

    await dialog.locator("#buy").click()

    await expect(dialog.locator("#recharge-status")).to_contain_text("waiting for the payment")
    await expect(dialog).to_be_hidden()
    wallet = await page_api.wallet(await page_user(page))
    assert wallet["coins"] > VIEWER_COINS
    await expect(page.locator("#balance-value")).to_have_text(f"{wallet['coins']:,}")


async def test_the_top_gifters_board_ranks_the_rooms_gifters_by_coins(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    names = ("Mika", "Jonas", "Aiko", "Priya")
    fans = [await named_user(page_api.http, name, coins=10_000) for name in names]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                Client(page_server.ws_url, fan.token, receive_events=False)
            )
            for fan in fans
        ]
        for client in clients:
            await client.join(room)
        await clients[1].send_gift(room, "corgi")
        await clients[1].send_gift(room, "hand_hearts")
        for _ in range(12):
            await clients[0].send_gift(room, "rose")
            await clients[2].send_gift(room, "finger_heart")
        for _ in range(3):
            await clients[3].send_gift(room, "doughnut")

        board = page.locator("#top-gifters li")
        await expect(board).to_have_count(4)
        ranked = [fans[i].user for i in (1, 3, 2, 0)]  # 399, 90, 60 and 12 coins
        await expect(board.first).to_contain_text("399")
        ranking = await board.evaluate_all("items => items.map(li => li.dataset.user)")
        assert ranking == ranked
        await expect(page.locator("#viewer-count")).to_have_text("5")
        # The room's card in the list counts the same viewers as the stage.
        card = page.locator(f'.room-card[data-room="{room}"] .room-viewers')
        await expect(card).to_have_text("👁 5 watching")
        await settle(page)
        await screenshot(page, "viewer.png")


async def test_a_room_picked_from_the_live_list_opens_on_the_stage(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    first, second = await live_room(page_api), await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={first}")
    await expect(page.locator("#stage")).to_have_attribute("data-room", first)

    await page.locator(f'.room-card[data-room="{second}"]').click()

    await expect(page.locator("#stage")).to_have_attribute("data-room", second)
    await expect(page.locator(f'.room-card[data-room="{second}"]')).to_have_class(
        re.compile(r"\bcurrent\b")
    )
    assert page.url.endswith(f"?room={second}")


async def test_the_page_makes_a_dev_account_once_and_keeps_it_across_reloads(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    token = await page_token(page)
    await page.locator('.gift-tile[data-gift="rose"]').click()
    await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS - 1:,}")

    await page.reload()

    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    assert await page_token(page) == token
    await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS - 1:,}")


async def test_a_chest_counts_down_opens_and_pays_the_viewer_who_claims_it(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    dropper = await named_user(page_api.http, "Mika", coins=1000)
    ws = await RawClient.open(page_server.ws_url)
    try:
        await ws.auth(dropper)
        await ws.join(room)
        drop = {"t": "drop_chest", "id": "chest-for-the-page", "room": room, "coins": 100}
        dropped = await ws.request(drop, "dropped")
        assert dropped["t"] == "dropped", dropped

        chest = page.locator(f'.chest[data-chest="{dropped["chest"]}"]')
        await expect(chest).to_contain_text("Mika's chest")
        await expect(chest.locator(".chest-when")).to_contain_text("opens in")
        claim = chest.locator(".chest-claim")
        await expect(claim).to_be_enabled()
        await claim.click()

        await expect(claim).to_have_text("Claimed #1")
        await expect(chest.locator(".chest-when")).to_contain_text("you got 100 coins!")
        await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS + 100:,}")
    finally:
        await ws.close()


async def test_a_chest_dropped_from_the_page_is_shared_by_the_viewers_who_claim_it(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    page = await open_page(context, f"{page_server.base_url}/?room={room}")
    claimer = await named_user(page_api.http, "Jonas")
    ws = await RawClient.open(page_server.ws_url)
    try:
        await ws.auth(claimer)
        await ws.join(room)

        await page.locator("#chest-btn").click()
        await page.locator('#chest-sizes [data-coins="100"]').click()

        await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS - 100:,}")
        chest = page.locator(".chest")
        await expect(chest).to_contain_text("Your chest")
        await expect(chest.locator(".chest-claim")).to_have_count(0)
        await expect(chest).to_have_attribute("data-state", "open")
        chest_id = await chest.get_attribute("data-chest")
        claimed = await ws.request({"t": "claim", "room": room, "chest": chest_id}, "claimed")
        assert claimed["t"] == "claimed", claimed
        await expect(chest.locator(".chest-when")).to_have_text("1 viewer shared 100 coins")
        await expect(page.locator("#balance-value")).to_have_text(f"{VIEWER_COINS - 100:,}")
    finally:
        await ws.close()


# -- the host --------------------------------------------------------------------------------


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


# -- the browser module (static/giftstream.js) -------------------------------------------------

# A client whose WebSocket loses the first ack, as when a connection dies right after the server
# answered: the client must reconnect and send the same gift id again.
LOST_ACK = """async ({ token, room }) => {
  const { Backoff, GiftstreamClient } = await import("/static/giftstream.js");
  let sockets = 0;
  const giftIds = [];
  class LosingSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const mine = ++sockets;
      const send = this.send.bind(this);
      this.send = (data) => {
        const frame = JSON.parse(data);
        if (frame.t === "gift") giftIds.push(frame.id);
        send(data);
      };
      this.addEventListener("message", (m) => {
        if (mine === 1 && JSON.parse(m.data).t === "ack") {
          m.stopImmediatePropagation();
          this.close();
        }
      });
    }
  }
  const backoff = new Backoff({ baseMs: 50, maxDelayMs: 200 });
  const url = GiftstreamClient.urlFor(location);
  const client = new GiftstreamClient(url, token, { WebSocket: LosingSocket, backoff });
  await client.connect();
  await client.join(room);
  const ack = await client.sendGift(room, "rose", 1);
  client.close();
  return { ack, sockets, giftIds };
}"""

# A scripted server: three connections, each dropped after its frames. The second resumes in the
# same epoch (its replay overlaps what was seen; live frames come in a batch); the third finds
# the room's history reset (a new epoch).
RESUME = """async () => {
  const { Backoff, GiftstreamClient } = await import("/static/giftstream.js");
  const gift = (offset, extra = {}) => ({
    t: "gift", room: "r1", event: `e${offset}`, offset, from: "u2", from_name: "Bo", to: "h",
    gift: "rose", name: "Rose", count: 1, coins: 1, ...extra,
  });
  const joined = (id, epoch, offset) =>
    ({ t: "joined", id, room: "r1", host: "h", live: true, epoch, offset, viewers: 3 });
  const scripts = [
    (s, id) => { s.reply(joined(id, "A", 10), gift(11), gift(12)); s.drop(); },
    (s, id) => {
      s.reply(joined(id, "A", 14), gift(12), gift(13), gift(14));
      s.reply({ t: "batch", room: "r1", frames: [gift(15), gift(16)] });
      s.reply(gift(16, { streak: { id: "e15", repeat: 2, end: true } }));
      s.drop();
    },
    (s, id) => s.reply(joined(id, "B", 2), gift(1), gift(2)),
  ];
  const sockets = [];
  class ScriptedSocket {
    constructor() {
      this.sent = [];
      this.script = scripts[sockets.push(this) - 1];
      setTimeout(() => this.onopen(), 0);
    }
    send(data) {
      const f = JSON.parse(data);
      this.sent.push(f);
      if (f.t === "auth") this.reply({ t: "welcome", id: f.id, user: "u1", coins: 5, diamonds: 0 });
      if (f.t === "join") this.script(this, f.id);
    }
    reply(...frames) {
      for (const f of frames) setTimeout(() => this.onmessage?.({ data: JSON.stringify(f) }), 0);
    }
    drop() { setTimeout(() => this.onclose?.({ code: 1006 }), 0); }
    close() {}
  }
  const backoff = new Backoff({ baseMs: 1, maxDelayMs: 5 });
  const client = new GiftstreamClient("ws://scripted", "t", { WebSocket: ScriptedSocket, backoff });
  const gifts = [], epochs = [], states = [];
  const done = new Promise((resolve) => client.addEventListener("gift", (e) => {
    gifts.push([e.offset, e.replayed, e.closesStreak]);
    if (gifts.length === 9) resolve();
  }));
  client.addEventListener("epoch", (e) => epochs.push([e.oldEpoch, e.newEpoch]));
  client.addEventListener("state", (e) => states.push(e.state));
  await client.connect();
  await client.join("r1");
  await done;
  client.close();
  const since = sockets.map((s) => s.sent.find((f) => f.t === "join").since ?? null);
  return { gifts, epochs, states, since };
}"""

# 70 gifts at once on a connection that answers none until told.
IN_FLIGHT = """async () => {
  const { GiftstreamClient } = await import("/static/giftstream.js");
  let socket;
  class SilentSocket {
    constructor() { socket = this; this.gifts = []; setTimeout(() => this.onopen(), 0); }
    send(data) {
      const f = JSON.parse(data);
      if (f.t === "gift") this.gifts.push(f.id);
      if (f.t === "auth") {
        const welcome = { t: "welcome", id: f.id, user: "u1", coins: 100, diamonds: 0 };
        setTimeout(() => this.onmessage({ data: JSON.stringify(welcome) }), 0);
      }
    }
    close() {}
  }
  const client = new GiftstreamClient("ws://silent", "t", { WebSocket: SilentSocket });
  await client.connect();
  const acks = Array.from({ length: 70 }, () => client.sendGift("r1", "rose"));
  const before = socket.gifts.length;
  const ack = { t: "ack", id: socket.gifts[0], event: "e1", coins: 99 };
  socket.onmessage({ data: JSON.stringify(ack) });
  const first = await acks[0];
  const after = socket.gifts.length;
  client.close();
  await Promise.allSettled(acks);
  return { before, after, first };
}"""

BACKOFF = """async () => {
  const { Backoff } = await import("/static/giftstream.js");
  const backoff = new Backoff({ baseMs: 250, maxDelayMs: 5000 });
  const attempts = [...Array(12).keys()];
  return {
    ceilings: attempts.map((n) => backoff.delay(n, () => 1)),
    floors: attempts.map((n) => backoff.delay(n, () => 0)),
    drawn: attempts.map((n) => backoff.delay(n)),
  };
}"""


async def module_page(context: BrowserContext, server: ServerProcess) -> Page:
    """A page of the server's origin that runs no app: the module alone."""
    page = await context.new_page()
    await page.goto(f"{server.base_url}/healthz")
    return page


async def test_the_module_resends_a_gift_whose_ack_was_lost_and_it_is_charged_once(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    fan = await page_api.user(coins=100)
    page = await module_page(context, page_server)

    result = await page.evaluate(LOST_ACK, {"token": fan.token, "room": room})

    assert result["sockets"] == 2
    first, again = result["giftIds"]
    assert first == again
    assert result["ack"]["coins"] == 99
    assert (await page_api.wallet(fan))["coins"] == 99


# Every gift's first answer is `unavailable` (the server loses the debit's reply): the module
# re-sends the same id by itself and resolves with the one ack.
UNAVAILABLE_ONCE = """async ({ token, room }) => {
  const { Backoff, GiftstreamClient } = await import("/static/giftstream.js");
  const giftIds = [];
  const errors = [];
  class WatchedSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const send = this.send.bind(this);
      this.send = (data) => {
        const frame = JSON.parse(data);
        if (frame.t === "gift") giftIds.push(frame.id);
        send(data);
      };
      this.addEventListener("message", (m) => {
        const frame = JSON.parse(m.data);
        if (frame.t === "error") errors.push([frame.code, frame.retry]);
      });
    }
  }
  const backoff = new Backoff({ baseMs: 50, maxDelayMs: 200 });
  const url = GiftstreamClient.urlFor(location);
  const client = new GiftstreamClient(url, token, { WebSocket: WatchedSocket, backoff });
  await client.connect();
  await client.join(room);
  const ack = await client.sendGift(room, "rose", 1, { id: "page-retries" });
  client.close();
  return { ack, giftIds, errors };
}"""


@pytest.fixture(scope="module")
def lossy_page_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """A server whose every new debit runs and then loses its reply (a store failure)."""
    env = {"GIFTSTREAM_FAULTS": "lose_debit_reply"}
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


async def test_the_module_resends_a_gift_answered_unavailable_and_it_is_charged_once(
    context: BrowserContext, lossy_page_server: ServerProcess
) -> None:
    api = Api(lossy_page_server.base_url)
    try:
        room = await live_room(api)
        fan = await api.user(coins=100)
        page = await module_page(context, lossy_page_server)

        result = await page.evaluate(UNAVAILABLE_ONCE, {"token": fan.token, "room": room})

        assert result["errors"] == [["unavailable", True]]
        assert result["giftIds"] == ["page-retries", "page-retries"]
        assert result["ack"]["coins"] == 99
        assert (await api.wallet(fan))["coins"] == 99
    finally:
        await api.aclose()


async def test_the_module_resumes_with_since_drops_duplicates_and_reports_a_new_epoch(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await module_page(context, page_server)

    result = await page.evaluate(RESUME)

    assert result["since"] == [None, {"epoch": "A", "offset": 12}, {"epoch": "A", "offset": 16}]
    # [offset, replayed, closes a streak]: 12 is not delivered twice, the batch is unpacked,
    # and the new epoch's history starts again from 1.
    assert result["gifts"] == [
        [11, False, False],
        [12, False, False],
        [13, True, False],
        [14, True, False],
        [15, False, False],
        [16, False, False],
        [16, False, True],
        [1, True, False],
        [2, True, False],
    ]
    assert result["epochs"] == [["A", "B"]]
    assert result["states"][:5] == ["connecting", "open", "reconnecting", "open", "reconnecting"]


async def test_the_module_keeps_at_most_64_gifts_in_flight(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await module_page(context, page_server)

    result = await page.evaluate(IN_FLIGHT)

    assert result["before"] == 64
    assert result["after"] == 65
    assert result["first"]["coins"] == 99


async def test_the_module_backoff_is_full_jitter_under_a_bounded_ceiling(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await module_page(context, page_server)

    result = await page.evaluate(BACKOFF)

    ceilings = [250, 500, 1000, 2000, 4000] + [5000] * 7
    assert result["ceilings"] == ceilings
    assert result["floors"] == [0] * 12
    assert all(0 <= d <= c for d, c in zip(result["drawn"], ceilings, strict=True))


async def test_the_host_studio_shows_the_earnings_history_from_the_ledger(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    fan = await named_user(page_api.http, "Lea", coins=1_000)
    async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
        await client.join(room)
        await client.send_gift(room, "rose", 3)
        await client.send_gift(room, "finger_heart", 1)
    # Archived to PostgreSQL, then read back by the page: newest first.
    rows = page.locator("#earnings-history li")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("+5 💎 from a gift of 5 coins")
    await expect(rows.last).to_contain_text("+3 💎 from a gift of 3 coins")
