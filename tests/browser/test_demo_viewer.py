"""The demo page's viewer in a real browser: Debian's Chromium driven by Playwright, against a
real server: gifts, streaks, recharges, the board, the room list, chests.

Screenshots of the views go to $TESTS_SCREENSHOTS_DIR (or a temporary folder).
"""

import contextlib
import re

import pytest
from playwright.async_api import BrowserContext, expect

from giftstream_client import Client
from support import Api, ServerProcess
from support import Client as RawClient
from support.browser import (
    TIMEOUT_MS,
    TIMES,
    VIEWER_COINS,
    live_room,
    named_user,
    open_page,
    page_token,
    page_user,
    screenshot,
    settle,
)

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)


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
