"""Once archived, Valkey keeps only the tail: the ledgers trimmed, the rooms' events to their replay
window, the `credited` records pruned past the window — and a kill -9 mid-trim loses nothing."""

import time
from pathlib import Path

import asyncpg
import msgpack

from giftstream.store import keys
from giftstream.store.audit import run_audit
from giftstream.store.connection import text
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.postgres import (
    close_pool,
    connect_pool,
)
from support import (
    ServerProcess,
    bearer,
    eventually,
    ledger_lengths,
    metric,
    raw_connected,
    serving,
    store,
    wait_ledgers_trimmed,
)
from support.ledger import ARCHIVE_TIMEOUT_S, TRIMMING, kill9, traffic


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
