"""Connecting to Redis/Valkey, loading the Functions, and the shared token secret."""

import secrets
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from giftstream.store import keys

Redis = aioredis.Redis
# Replies as this module's clients return them (decode_responses=False): redis-py types them
# loosely, so the store casts them once, to these, where it reads them.
HashReply = dict[bytes, bytes]
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
FUNCTION_FILES = ("wallet.lua", "gifts.lua", "rooms.lua", "earnings.lua", "chests.lua")
COMMON_FILE = "common.lua"
SOCKET_TIMEOUT_S = 10.0


def connect(url: str, max_connections: int = 64) -> Redis:
    """A client for commands. Replies stay bytes: payloads are msgpack. When every pooled
    connection is busy, a command waits for one (up to the socket timeout) instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=False,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


def connect_pubsub(url: str) -> Redis:
    """A client for the subscriber connection: no read timeout, since a quiet room sends
    nothing for hours (the hub checks liveness with PING instead), and no silent retries: a
    failure must reach the hub, which resubscribes and replays what was missed."""
    return aioredis.from_url(
        url,
        decode_responses=False,
        socket_timeout=None,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def function_sources() -> dict[str, str]:
    """Each library's source, with the shared helpers of common.lua put after its #!lua line."""
    folder = resources.files("giftstream.store").joinpath("functions")
    common = folder.joinpath(COMMON_FILE).read_text("utf-8")
    sources = {}
    for name in FUNCTION_FILES:
        shebang, _, body = folder.joinpath(name).read_text("utf-8").partition("\n")
        sources[name] = f"{shebang}\n{common}\n{body}"
    return sources


async def command(r: Redis, *args: Any) -> Any:
    return await r.execute_command(*args)  # type: ignore[no-untyped-call]


async def load_functions(r: Redis) -> None:
    """FUNCTION LOAD REPLACE every library; safe to run from many workers at once."""
    for source in function_sources().values():
        await command(r, "FUNCTION", "LOAD", "REPLACE", source)


async def fcall(r: Redis, name: str, keys_: list[str], args: list[Any]) -> Any:
    return await command(r, "FCALL", name, len(keys_), *keys_, *args)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def read_hash(r: Redis, key: str) -> HashReply:
    return cast(HashReply, await r.hgetall(key))


async def read_stream(
    r: Redis, key: str, start: str = "-", count: int | None = None
) -> StreamEntries:
    return cast(StreamEntries, await r.xrange(key, min=start, max="+", count=count))


async def shared_secret(r: Redis, configured: str | None) -> bytes:
    """The token-signing secret: the configured one, or one generated once and kept in the store
    so that every worker, node and restart accepts the same tokens."""
    if configured:
        return configured.encode()
    await r.set(keys.SECRET, secrets.token_urlsafe(32), nx=True)
    value = await r.get(keys.SECRET)
    if value is None:
        raise RuntimeError("the token secret vanished from the store")
    return raw(value)
