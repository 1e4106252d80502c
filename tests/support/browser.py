"""Helpers of the browser tests: Debian's Chromium, the demo page and screenshots (the proxy that
cuts the page's connections is support/proxy.py's)."""

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import httpx
from playwright.async_api import BrowserContext, Page, expect

from .api import Api
from .users import User

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's launch() gives each browser a fresh temporary user-data dir of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
# Generous: CI machines run the server, the bots and Chromium on a couple of cores.
TIMEOUT_MS = 20_000
# Screenshots go to a temporary folder, or to $TESTS_SCREENSHOTS_DIR (docs/screenshots to
# refresh the README's pictures), so that a test run does not rewrite tracked files.
SCREENSHOTS = Path(
    os.environ.get("TESTS_SCREENSHOTS_DIR") or Path(tempfile.gettempdir()) / "giftstream-shots"
)
# The multiplication sign of a combo counter ("x17" on the page).
TIMES = "\u00d7"
# The page's starting balance for a new viewer (static/api.js).
VIEWER_COINS = 2000


async def open_page(context: BrowserContext, url: str) -> Page:
    """Open the demo page and wait until it is connected and shows its view."""
    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    return page


async def page_token(page: Page, view: str = "viewer") -> str:
    """The token of the dev account the page made for itself."""
    token: str = await page.evaluate(
        "(view) => JSON.parse(localStorage.getItem(`giftstream.${view}`)).token", view
    )
    return token


async def settle(page: Page) -> None:
    """Wait until banners and lines have slid in (their entrance animations are over)."""
    entering = "a => ['banner-in', 'rise'].includes(a.animationName)"
    await page.wait_for_function(f"() => !document.getAnimations().some({entering})")


async def screenshot(
    page: Page, name: str, animations: Literal["allow", "disabled"] = "allow"
) -> Path:
    """Save a screenshot (to $TESTS_SCREENSHOTS_DIR, or a temporary folder)."""
    path = SCREENSHOTS / name
    await page.screenshot(path=path, animations=animations)
    return path


async def named_user(
    http: httpx.AsyncClient, name: str, coins: int = 0, role: str = "viewer"
) -> User:
    r = await http.post(
        "/v1/dev/users", json={"name": name, "region": "US", "role": role, "coins": coins}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return User(body["user"], body["token"])


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
