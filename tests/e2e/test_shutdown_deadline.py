"""SIGTERM ends `serve --dev` even with 2 million unrelated keys in the store and the relay in
the middle of a pass over them (issue #21, item 1: a lost cancel hung the worker for ever)."""

import asyncio
import signal

from giftstream.store import keys
from giftstream.store.connection import Redis
from giftstream.store.embedded import EmbeddedValkey
from support import SHARED_ENV, ServerProcess, eventually, serving, store

UNRELATED_KEYS = 2_000_000
KEYS_PER_CALL = 200_000
# Liveness bounds, far above the expected times: a hang is what they catch.
RELAY_BUSY_WAIT_S = 60.0
EXIT_WAIT_S = 60.0

FILL = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'junk:' .. i, 'x') end
return 1
"""


async def fill(redis: Redis, count: int) -> None:
    """`count` small keys no part of the service knows, written inside the server (fast)."""
    for start in range(0, count, KEYS_PER_CALL):
        await redis.eval(FILL, 0, start, start + KEYS_PER_CALL - 1)


async def test_sigterm_ends_the_server_under_two_million_keys_during_a_relay_pass(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with store(fresh_valkey.url) as redis:
        await fill(redis, UNRELATED_KEYS)
        assert await redis.dbsize() >= UNRELATED_KEYS
        env = {**SHARED_ENV, "GIFTSTREAM_RELAY_INTERVAL_S": "0.2"}
        async with serving(ServerProcess(fresh_valkey.url, env=env)) as (server, _):

            async def relay_busy() -> bool:
                # The relay holds its lease while it indexes the outboxes of older versions:
                # a SCAN over every key, the pass that hung before.
                return bool(await redis.exists(keys.RELAY_LOCK))

            await eventually(relay_busy, RELAY_BUSY_WAIT_S, "the relay to start a pass")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.wait_exit, EXIT_WAIT_S)
        assert code == 0, server.log()
