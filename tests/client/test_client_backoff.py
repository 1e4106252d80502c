"""Reconnecting is bounded: delays capped and jittered, attempts and time limited."""

import asyncio
import itertools
import random

import pytest

from giftstream_client import Backoff, Client, ConnectionFailed
from support import Api, free_port
from support.proxy import Proxy


def test_backoff_ceilings_double_up_to_the_max_and_every_jittered_delay_stays_under_them() -> None:
    policy = Backoff(base_s=0.1, max_delay_s=2.0, factor=2.0)
    ceilings = list(itertools.islice(policy.ceilings(), 200))
    delays = list(itertools.islice(policy.delays(random.Random(7)), 200))

    assert ceilings[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert set(ceilings[5:]) == {2.0}
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # Full jitter spreads the capped delays over the whole range.
    assert min(delays[5:]) < 0.2 and max(delays[5:]) > 1.8
    assert delays == list(itertools.islice(policy.delays(random.Random(7)), 200))


def test_a_backoff_that_could_not_bound_its_delays_is_refused() -> None:
    with pytest.raises(ValueError, match="max_delay_s"):
        Backoff(base_s=2.0, max_delay_s=1.0)
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)


async def test_connecting_to_a_closed_port_gives_up_after_the_configured_attempts() -> None:
    client = Client(
        f"ws://127.0.0.1:{free_port()}/v1/ws",
        "v1.any.token",
        backoff=Backoff(base_s=0.01, max_delay_s=0.02, max_attempts=4),
    )
    try:
        with pytest.raises(ConnectionFailed, match="4 attempts") as failed:
            await client.connect()
        assert failed.value.attempts == 4
        assert isinstance(failed.value.__cause__, ConnectionRefusedError)
    finally:
        await client.close()


async def test_connecting_gives_up_when_the_next_delay_would_overrun_the_time_budget() -> None:
    budget = Backoff(base_s=0.05, max_delay_s=0.05, max_attempts=1_000, max_elapsed_s=0.3)
    client = Client(f"ws://127.0.0.1:{free_port()}/v1/ws", "v1.any.token", backoff=budget)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ConnectionFailed) as failed:
            await client.connect()
    finally:
        await client.close()
    assert 1 < failed.value.attempts < 1_000
    # Every wait fits the budget; only the attempts themselves run past it.
    assert loop.time() - started < 0.3 + failed.value.attempts * 0.05


async def test_a_client_that_cannot_reconnect_fails_its_events_and_gifts_with_connection_failed(
    api: Api, proxy: Proxy
) -> None:
    host = await api.user(role="host")
    viewer = await api.user(coins=100)
    room = await api.open_room(host)
    client = Client(
        proxy.url, viewer.token, backoff=Backoff(base_s=0.01, max_delay_s=0.02, max_attempts=3)
    )
    try:
        await client.connect()
        await client.join(room)
        events = client.events()

        await proxy.close()

        with pytest.raises(ConnectionFailed, match="3 attempts"):
            await anext(events)
        with pytest.raises(ConnectionFailed):
            await client.send_gift(room, "rose")
    finally:
        await client.close()
    assert (await api.wallet(viewer))["coins"] == 100
