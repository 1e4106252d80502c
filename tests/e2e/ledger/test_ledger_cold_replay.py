"""Two-tier idempotency: a retry whose stored answer was archived and deleted is answered from
PostgreSQL, the filter's false positives are looked up and gifted once, PostgreSQL down answers
`unavailable`; each user's filter stays one fixed size."""

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
from redis.asyncio.cluster import RedisCluster

from giftstream.store import keys
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.embedded_cluster import EmbeddedCluster
from support import (
    ServerProcess,
    connected,
    eventually,
    ledger_lengths,
    metric,
    raw_connected,
    serving,
    store,
)
from support.ledger import (
    ARCHIVE_TIMEOUT_S,
    FAST_ARCHIVE,
    FILTER_BITS,
    HOT_WINDOW_0,
    PrunedGift,
    audit_both,
    exited,
    fill_filter,
    gift_entries,
    own_postgres,
    pruned_gift,
    restart_postgres,
    wait_archived,
)


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
                return exited(pid)

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
