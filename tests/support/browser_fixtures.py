"""The browser tests' fixtures: Chromium, the page's server and API, a fresh browser profile.
Registered for every test by tests/conftest.py (`pytest_plugins`)."""

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from giftstream.store.embedded import EmbeddedValkey

from .api import Api
from .browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT
from .servers import ServerProcess, running


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
