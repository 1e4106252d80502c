"""Connecting to Redis/Valkey and loading the Functions."""

import asyncio
from importlib import resources
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from giftstream.errors import Refused
from giftstream.store import keys

# A client for one server (redis://, rediss://, unix://) or for a cluster (redis+cluster://).
Redis = aioredis.Redis | RedisCluster


class Commands(Protocol):
    """Anything that executes a command: a client, or the gift path's auto-pipeline."""

    async def execute_command(self, *args: Any) -> Any: ...


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
# Replies as this module's clients return them (decode_responses=False): redis-py types them
# loosely, so the store casts them once, to these, where it reads them.
HashReply = dict[bytes, bytes]
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
FUNCTION_FILES = (
    "wallet.lua",
    "gifts.lua",
    "rooms.lua",
    "earnings.lua",
    "chests.lua",
    "archive.lua",
    "locks.lua",
    "battles.lua",
)
COMMON_FILE = "common.lua"
SOCKET_TIMEOUT_S = 10.0
# Failures of the store's connection or of its availability (lost, timed out, loading, a
# replica after a fail-over, a cluster without a primary for the slot). A command that failed
# so may or may not have run: its caller cannot say what happened, only that a retry can tell.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterUnreachableError,
    redis.exceptions.SlotNotCoveredError,
    OSError,
)


class _Cluster(RedisCluster):
    """Routes FCALL by its declared keys, as redis-py does for EVAL (it would otherwise ask a
    server which keys the call has: a round trip per call); and, as the blocking pool does for
    one server, makes a command wait for a free connection instead of failing when all are
    busy (redis-py's cluster pools raise instead)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Semaphore(int(kwargs.get("max_connections", 64)))

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._gate:
            return await super().execute_command(*args, **kwargs)

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in ("FCALL", "FCALL_RO") and len(args) >= 2 and int(args[1]) > 0:
            slots = {self.keyslot(k) for k in args[2 : 2 + int(args[1])]}
            if len(slots) == 1:
                return slots.pop()
        return await super()._determine_slot(command, *args)


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """`redis+cluster://host:port[,host:port...]` → the seed nodes."""
    hosts = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    seeds = []
    for seed in hosts.split(","):
        host, _, port = seed.rpartition(":")
        seeds.append((host or "127.0.0.1", int(port or 6379)))
    return seeds


def connect(url: str, max_connections: int = 64) -> Redis:
    """A client for commands. Replies stay bytes: payloads are msgpack. When every pooled
    connection is busy, a command waits for one (up to the socket timeout) instead of failing."""
    if is_cluster(url):
        return _Cluster(
            startup_nodes=[ClusterNode(h, p) for h, p in cluster_seeds(url)],
            ssl=url.startswith("rediss"),
            decode_responses=False,
            max_connections=max_connections,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )
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


def connect_pubsub(url: str) -> aioredis.Redis:
    """A client for the subscriber connection: no read timeout, since a quiet room sends
    nothing for hours (the hub checks liveness with PING instead), and no silent retries: a
    failure must reach the hub, which resubscribes and replays what was missed. For a cluster,
    the first seed node (plain channels reach every node of a cluster)."""
    if is_cluster(url):
        host, port = cluster_seeds(url)[0]
        return connect_pubsub_node(host, port, url)
    return aioredis.from_url(
        url,
        decode_responses=False,
        socket_timeout=None,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def connect_pubsub_node(host: str, port: int, url: str) -> aioredis.Redis:
    """Like connect_pubsub, to one node of the cluster named by `url`."""
    return aioredis.Redis(
        host=host,
        port=port,
        ssl=url.startswith("rediss"),
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


async def command(r: Commands, *args: Any) -> Any:
    return await r.execute_command(*args)


async def load_functions(r: Redis) -> None:
    """FUNCTION LOAD REPLACE every library, on every primary of a cluster; safe to run from many
    workers at once."""
    for source in function_sources().values():
        if isinstance(r, RedisCluster):
            await r.initialize()
            await r.execute_command(
                "FUNCTION", "LOAD", "REPLACE", source, target_nodes=r.get_primaries()
            )
        else:
            await command(r, "FUNCTION", "LOAD", "REPLACE", source)


async def fcall(r: Commands, name: str, keys_: list[str], args: list[Any]) -> Any:
    return await command(r, "FCALL", name, len(keys_), *keys_, *args)


def refusal(reply: list[Any]) -> Refused:
    """The error of a Function's refusal `[status, number, ...]`: errors.ERRORS names the code
    of each status (a status it does not name is an internal error)."""
    return Refused(text(reply[0]), tuple(v for v in reply[1:] if isinstance(v, int)))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def read_hash(r: Redis, key: str) -> HashReply:
    return cast(HashReply, await r.hgetall(key))


async def read_stream(
    r: Redis, key: str, start: str = "-", count: int | None = None, end: str = "+"
) -> StreamEntries:
    return cast(StreamEntries, await r.xrange(key, min=start, max=end, count=count))


async def forget_legacy_secret(r: Redis) -> None:
    """Delete the token secret that earlier versions kept in the store (and so in its AOF, where
    other local users could read it): the keys now come from giftstream.keyring only."""
    await r.delete(keys.LEGACY_SECRET)
