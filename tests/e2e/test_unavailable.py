"""No ambiguous answers: when the store fails mid-gift, the sender is answered `unavailable`
(`retry: true`), never `internal` for a gift that may have been charged, and the same id
re-sent gets the gift's one true answer. The clients re-send by themselves."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from giftstream.store.embedded import EmbeddedValkey
from giftstream_client import Backoff
from support import (
    SHARED_ENV,
    Api,
    ServerProcess,
    User,
    connected,
    crash,
    eventually,
    logged,
    poll,
    raw_connected,
    running,
    serving,
)

COINS = 1_000
ROSE = 1
RELAY_ENV = {"GIFTSTREAM_RELAY_GRACE_MS": "300", "GIFTSTREAM_RELAY_INTERVAL_S": "0.2"}
SETTLE_S = 15.0


@pytest.fixture(scope="module")
def lossy_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """A server whose every new debit runs and then loses its reply, as when the store's
    connection breaks after the command ran (GIFTSTREAM_FAULTS=lose_debit_reply)."""
    env = {**SHARED_ENV, **RELAY_ENV, "GIFTSTREAM_FAULTS": "lose_debit_reply"}
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


@pytest.fixture
async def lossy_api(lossy_server: ServerProcess) -> AsyncIterator[Api]:
    api = Api(lossy_server.base_url)
    yield api
    await api.aclose()


async def scene(api: Api) -> tuple[User, User, str]:
    host = await api.user(role="host")
    return host, await api.user(coins=COINS), await api.open_room(host)


async def until_diamonds(api: Api, host: User, diamonds: int) -> None:
    """Wait until the host has been credited `diamonds` (the relay credits a lost reply's gift)."""
    await poll(
        lambda: api.wallet(host),
        lambda wallet: wallet["diamonds"] == diamonds,
        SETTLE_S,
        f"the host credited {diamonds} diamonds",
    )


async def test_a_gift_whose_debit_reply_is_lost_is_answered_unavailable_and_its_retry_acked(
    lossy_server: ServerProcess, lossy_api: Api
) -> None:
    host, fan, room = await scene(lossy_api)
    async with raw_connected(lossy_server, fan) as ws:
        await ws.join(room)
        first = await ws.gift(room, "rose", "lost-reply")
        assert first["t"] == "error", first
        assert (first["code"], first["retry"], first["id"]) == ("unavailable", True, "lost-reply")
        assert "re-send the same id" in first["message"]
        # The debit did run: the answer did not say it did not.
        assert (await lossy_api.wallet(fan))["coins"] == COINS - ROSE
        again = await ws.gift(room, "rose", "lost-reply")
        assert again["t"] == "ack", again
        assert again["coins"] == COINS - ROSE
        third = await ws.gift(room, "rose", "lost-reply")
        assert (third["t"], third["event"]) == ("ack", again["event"])
    assert (await lossy_api.wallet(fan))["coins"] == COINS - ROSE
    await until_diamonds(lossy_api, host, ROSE)


async def test_the_python_client_re_sends_an_unavailable_gift_and_returns_its_one_ack(
    lossy_server: ServerProcess, lossy_api: Api
) -> None:
    host, fan, room = await scene(lossy_api)
    async with connected(lossy_server, fan, receive_events=False) as client:
        await client.join(room)
        ack = await client.send_gift(room, "rose", id="client-retries")
        assert ack.coins == COINS - ROSE
        # What the server answers that id now: the same event, the same balance.
        async with raw_connected(lossy_server, fan) as ws:
            stored = await ws.gift(room, "rose", "client-retries")
        assert (stored["event"], stored["coins"]) == (ack.event, ack.coins)
    assert (await lossy_api.wallet(fan))["coins"] == COINS - ROSE
    await until_diamonds(lossy_api, host, ROSE)


async def test_with_the_store_killed_a_gift_is_unavailable_until_it_is_back_then_acked_once(
    short_tmp: Path,
) -> None:
    valkey = EmbeddedValkey(short_tmp / "data")
    valkey.start()
    try:
        async with serving(ServerProcess(valkey.url, env=SHARED_ENV)) as (server, api):
            host, fan, room = await scene(api)
            patient = Backoff(base_s=0.05, max_delay_s=0.5, max_attempts=1000, max_elapsed_s=60)
            async with connected(server, fan, receive_events=False, backoff=patient) as client:
                await client.join(room)
                await asyncio.to_thread(crash, valkey)
                sending = asyncio.create_task(client.send_gift(room, "rose", id="through-kill"))
                try:
                    # The first answer was `unavailable`: the client waits and re-sends.
                    await eventually(
                        logged(server, "gift through-kill failed, the store being"), 20, "the log"
                    )
                    assert not sending.done()
                    await asyncio.to_thread(valkey.start)
                    ack = await asyncio.wait_for(sending, 60)
                finally:
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sending
            assert ack.coins == COINS - ROSE
            assert (await api.wallet(fan))["coins"] == COINS - ROSE
            await until_diamonds(api, host, ROSE)
            async with raw_connected(server, fan) as ws:
                await ws.join(room)
                stored = await ws.gift(room, "rose", "through-kill")
                assert (stored["t"], stored["event"]) == ("ack", ack.event)
    finally:
        valkey.stop()


async def test_a_refusal_that_is_sure_carries_no_retry(server: ServerProcess, api: Api) -> None:
    fan = await api.user(coins=0)
    async with raw_connected(server, fan) as ws:
        answer = await ws.gift("nowhere", "rose", "sure")
    assert answer["code"] == "not_in_room"
    assert "retry" not in answer
