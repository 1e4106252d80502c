"""Every ledger entry and room event reaches PostgreSQL exactly once: across a kill -9 of the
archiver's process or of PostgreSQL, with two servers or two workers on one store, on a cluster;
the archiver's lease, its fence and its keeper; migrations."""

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio.cluster import RedisCluster

from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.archive import Archiver, Fenced
from giftstream.store.connection import load_functions
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.embedded_cluster import EmbeddedCluster
from giftstream.store.postgres import (
    migrate,
    migrations,
)
from support import (
    ServerProcess,
    bearer,
    eventually,
    metric,
    serving,
    store,
)
from support.ledger import (
    ARCHIVE_TIMEOUT_S,
    FAST_ARCHIVE,
    SMALL_BATCHES,
    archived,
    exited,
    kill9,
    own_postgres,
    restart_postgres,
    traffic,
    valkey_entries,
    wait_archived,
)


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
                return exited(pid)

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
