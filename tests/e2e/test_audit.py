"""`giftstream audit`: clean after real traffic, and naming what is wrong when money is not —
across both stores, with ledgers trimmed in Valkey once PostgreSQL holds them."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgpack
import pytest

from giftstream.domain.catalog import DiamondRate
from giftstream.store import gifts, keys
from giftstream.store.audit import run_audit
from giftstream.store.embedded import EmbeddedValkey, is_running
from giftstream.store.postgres import close_pool, connect_pool
from giftstream_client import IdempotencyConflict, InsufficientCoins
from support import (
    SHARED_ENV,
    TRIMMING_ARCHIVE,
    Api,
    ServerProcess,
    User,
    audit,
    audit_cli,
    connected,
    database_for,
    serving,
    shut_down_leftover_valkey,
    store,
    wait_ledgers_trimmed,
)

# Valkey's ledgers trimmed as soon as PostgreSQL holds them.
TRIMMING = {**SHARED_ENV, **TRIMMING_ARCHIVE}
GRANTED = 10_000 + 3
SPENT = 5 * 1 + 3 * 5 + 100 + 500 + 1
# What the traffic below leaves: 2 hosts and 2 viewers, 9 gifts debited and credited.
CLEAN_SUMMARY = [
    "users 4, rooms 2",
    f"coins granted {GRANTED} = held {GRANTED - SPENT} + spent {SPENT}",
    "gifts debited 9: credited 9, in flight 0",
    f"diamonds credited {SPENT}",
    "audit clean",
]


@dataclass(frozen=True)
class Traffic:
    rich: User
    poor: User
    rooms: list[str]


async def traffic(server: ServerProcess, api: Api) -> Traffic:
    """Gifts of several kinds in two rooms, with retries, a conflict and refusals."""
    hosts = [await api.user(role="host") for _ in range(2)]
    rooms = [await api.open_room(host) for host in hosts]
    rich = await api.user(coins=10_000)
    poor = await api.user(coins=3)
    async with (
        connected(server, rich, receive_events=False) as rich_ws,
        connected(server, poor, receive_events=False) as poor_ws,
    ):
        for ws in (rich_ws, poor_ws):
            for room in rooms:
                await ws.join(room)
        acks = [await rich_ws.send_gift(rooms[0], "rose", id=f"rose-{n}") for n in range(5)]
        acks.append(await rich_ws.send_gift(rooms[0], "finger_heart", count=3, id="hearts"))
        acks.append(await rich_ws.send_gift(rooms[1], "confetti", id="confetti"))
        acks.append(await rich_ws.send_gift(rooms[1], "money_gun", id="gun"))
        acks.append(await poor_ws.send_gift(rooms[0], "rose", id="small"))
        assert len({a.event for a in acks}) == 9, acks
        for retry in ("rose-2", "confetti"):
            original = next(a for a in acks if a.id == retry)
            gift = "rose" if retry == "rose-2" else "confetti"
            room = rooms[0] if retry == "rose-2" else rooms[1]
            assert await rich_ws.send_gift(room, gift, id=retry) == original
        with pytest.raises(IdempotencyConflict):
            await rich_ws.send_gift(rooms[1], "corgi", id="confetti")
        with pytest.raises(InsufficientCoins):
            await poor_ws.send_gift(rooms[0], "confetti", id="too-much")
        with pytest.raises(InsufficientCoins):
            await poor_ws.send_gift(rooms[1], "finger_heart", id="too-much-2")
    return Traffic(rich, poor, rooms)


def assert_clean(code: int, report: str) -> None:
    assert code == 0, report
    for line in CLEAN_SUMMARY:
        assert line in report, report


async def test_audit_is_clean_after_gifts_retries_conflicts_and_refusals(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url)) as (server, api):
        await traffic(server, api)
        code, report = await audit(fresh_valkey.url)
    assert_clean(code, report)


async def test_audit_fails_and_names_the_user_whose_balance_was_changed_outside_the_ledger(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url)) as (server, api):
        done = await traffic(server, api)
    assert_clean(*await audit(fresh_valkey.url))
    async with store(fresh_valkey.url) as redis:
        await redis.hincrby(keys.account(done.rich.user), "coins", 5)

    code, report = await audit(fresh_valkey.url)

    assert code != 0, report
    assert "audit FAILED" in report and "audit clean" not in report, report
    balance = 10_000 - (SPENT - 1)
    wrong = f"user {done.rich.user}: balance {balance + 5} but the ledger replays to {balance}"
    assert wrong in report, report
    assert "coins not conserved" in report, report
    assert done.poor.user not in report, report


async def test_audit_reports_a_negative_balance(fresh_valkey: EmbeddedValkey) -> None:
    async with serving(ServerProcess(fresh_valkey.url)) as (server, api):
        done = await traffic(server, api)
    async with store(fresh_valkey.url) as redis:
        # The poor viewer holds 2 coins.
        await redis.hincrby(keys.account(done.poor.user), "coins", -9)

    code, report = await audit(fresh_valkey.url)

    assert code != 0, report
    assert f"user {done.poor.user}: negative balance -7" in report, report


async def test_audit_reports_a_credit_that_was_never_debited(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url)) as (server, api):
        done = await traffic(server, api)
        host = (await api.wallet(done.rich))["user"]
    forged = "eforged0000000000000"
    payload = {
        "event": forged,
        "room": done.rooms[0],
        "host": host,
        "from": done.rich.user,
        "from_name": "t-viewer",
        "gift": "confetti",
        "name": "Confetti",
        "count": 1,
        "coins": 100,
        "ts": int(time.time() * 1000),
    }
    async with store(fresh_valkey.url) as redis:
        # The room half of a gift alone, as if a credit had been forged.
        rules = gifts.CreditRules(DiamondRate(1, 1), 1000, 10_000, 1_000, 5)
        credited = await gifts.credit(redis, done.rooms[0], msgpack.packb(payload), rules)
    assert not credited.duplicate and credited.diamonds == 100

    code, report = await audit(fresh_valkey.url)

    assert code != 0, report
    assert f"event {forged} credited but never debited" in report, report


async def test_audit_data_dir_reads_a_stopped_embedded_store_clean_then_corrupted(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    try:
        async with serving(ServerProcess(redis_url=None, data_dir=data)) as (server, api):
            done = await traffic(server, api)
        await shut_down_leftover_valkey(data)
        assert not is_running(data)

        assert_clean(*await audit_cli("--data-dir", str(data)))
        assert not is_running(data), "the audit must stop the Valkey it started"

        valkey = EmbeddedValkey(data)
        await asyncio.to_thread(valkey.start)
        try:
            async with store(valkey.url) as redis:
                await redis.hincrby(keys.account(done.rich.user), "coins", 5)
        finally:
            await asyncio.to_thread(valkey.stop)

        code, report = await audit_cli("--data-dir", str(data))
        assert code != 0, report
        assert f"user {done.rich.user}: balance" in report, report
        assert not is_running(data)
    finally:
        await shut_down_leftover_valkey(data)


STORM_VIEWERS = 6
STORM_AUDITS = 6


@dataclass
class Storm:
    viewers: list[User]
    acked: list[int]
    senders: list["asyncio.Task[None]"] = field(default_factory=list)

    async def more(self, gifts: int) -> None:
        """Wait until `gifts` more gifts are acked (the storm is making progress)."""
        target = sum(self.acked) + gifts
        async with asyncio.timeout(30):
            while sum(self.acked) < target:
                failed = [t.exception() for t in self.senders if t.done()]
                assert not failed, failed
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def storm(server: ServerProcess, api: Api) -> AsyncIterator[Storm]:
    """Viewers gifting without pause into three rooms (streaks, single gifts, counts) until the
    block ends: every gift's debit and credit run while the block's audits read the ledgers."""
    rooms = [await api.open_room(await api.user(role="host")) for _ in range(3)]
    viewers = [await api.user(coins=10_000_000) for _ in range(STORM_VIEWERS)]
    stop = asyncio.Event()
    going = Storm(viewers, [0] * len(viewers))

    async def gift_until_stopped(n: int, viewer: User) -> None:
        async with connected(server, viewer, receive_events=False) as ws:
            for room in rooms:
                await ws.join(room)
            while not stop.is_set():
                sent = going.acked[n]
                gift = ("rose", "finger_heart", "confetti")[(sent // 7) % 3]
                await ws.send_gift(rooms[sent % len(rooms)], gift, count=1 + sent % 3)
                going.acked[n] += 1

    going.senders = [asyncio.create_task(gift_until_stopped(n, v)) for n, v in enumerate(viewers)]
    try:
        await going.more(5 * len(viewers))
        yield going
    finally:
        stop.set()
        await asyncio.gather(*going.senders)


@contextlib.asynccontextmanager
async def ledger_of(redis_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the ledger of record of the deployment on the store at `redis_url`."""
    pool = await connect_pool(database_for(redis_url), max_size=1)
    try:
        yield pool
    finally:
        await close_pool(pool)


async def test_audit_is_clean_every_time_while_a_storm_of_gifts_runs(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with (
        serving(ServerProcess(fresh_valkey.url, env=TRIMMING)) as (server, api),
        store(fresh_valkey.url) as redis,
        ledger_of(fresh_valkey.url) as ledger,
        storm(server, api) as gifting,
    ):
        archived = 0
        for _ in range(STORM_AUDITS):
            # The archiver copies and trims while the audit reads both stores.
            report = await run_audit(redis, page=50, ledger=ledger)
            assert report.clean, report.summary()
            archived = max(archived, report.entries_archived)
            await gifting.more(50)
        assert archived > 0, "nothing was read from PostgreSQL: the audit did not span stores"
        code, out = await audit(fresh_valkey.url)
        assert code == 0, out
        assert "audit clean" in out, out


async def test_audit_under_a_storm_still_names_the_one_balance_changed_outside_the_ledger(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with (
        serving(ServerProcess(fresh_valkey.url, env=TRIMMING)) as (server, api),
        store(fresh_valkey.url) as redis,
        ledger_of(fresh_valkey.url) as ledger,
        storm(server, api) as gifting,
    ):
        victim = gifting.viewers[2].user
        await redis.hincrby(keys.account(victim), "coins", 5)
        report = await run_audit(redis, page=50, ledger=ledger)

    # Named: the victim's balance, off by the 5 coins, and (if the victim gifted after the
    # change) the first entry whose recorded balance carries them; nobody else.
    conservation, wrong, *later = report.problems
    assert conservation.startswith("coins not conserved"), report.summary()
    assert wrong.startswith(f"user {victim}: balance "), report.summary()
    balance, replayed = (int(word) for word in wrong.split() if word.isdigit())
    assert balance == replayed + 5, report.summary()
    assert all(p.startswith(f"user {victim}: ledger entry ") for p in later), report.summary()
    assert len(later) <= 1, report.summary()


async def test_audit_across_both_stores_is_clean_once_valkey_holds_no_archived_entry(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url, env=TRIMMING)) as (server, api):
        await traffic(server, api)
        async with store(fresh_valkey.url) as redis:
            lengths = await wait_ledgers_trimmed(redis)
        code, report = await audit(fresh_valkey.url)
    assert_clean(code, report)
    added = sum(added for _, added in lengths.values())
    assert f"{added} archived in PostgreSQL + 0 in Valkey; archive lag 0 entries" in report, report


async def test_a_valkey_only_audit_of_trimmed_ledgers_says_to_read_postgresql_too(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url, env=TRIMMING)) as (server, api):
        done = await traffic(server, api)
        async with store(fresh_valkey.url) as redis:
            await wait_ledgers_trimmed(redis)
            report = await run_audit(redis)
    assert not report.clean
    trimmed = f"{keys.user_ledger(done.rich.user)} is trimmed in Valkey"
    assert any(p.startswith(trimmed) for p in report.problems), report.summary()


async def test_audit_across_both_stores_names_a_balance_changed_outside_the_ledger(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url, env=TRIMMING)) as (server, api):
        done = await traffic(server, api)
        async with store(fresh_valkey.url) as redis:
            await wait_ledgers_trimmed(redis)
            await redis.hincrby(keys.account(done.rich.user), "coins", 5)
        code, report = await audit(fresh_valkey.url)
    assert code != 0, report
    balance = 10_000 - (SPENT - 1)
    wrong = f"user {done.rich.user}: balance {balance + 5} but the ledger replays to {balance}"
    assert wrong in report, report
    assert done.poor.user not in report, report


async def test_audit_across_both_stores_names_an_archived_row_gone_missing(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with serving(ServerProcess(fresh_valkey.url, env=TRIMMING)) as (server, api):
        done = await traffic(server, api)
        async with store(fresh_valkey.url) as redis:
            await wait_ledgers_trimmed(redis)
    stream = keys.user_ledger(done.rich.user)
    db = await asyncpg.connect(database_for(fresh_valkey.url))
    try:
        entries = await db.fetchval("SELECT entries FROM archive_cursors WHERE stream = $1", stream)
        lost = await db.fetchval(
            "DELETE FROM ledger_entries WHERE ctid = (SELECT ctid FROM ledger_entries"
            " WHERE stream = $1 AND ref = 'rose-1' OR stream = $1 AND request_id = 'rose-1'"
            " LIMIT 1) RETURNING ref",
            stream,
        )
    finally:
        await db.close()
    assert lost is not None

    code, report = await audit(fresh_valkey.url)

    assert code != 0, report
    assert f"{stream}: {entries} entries archived but PostgreSQL holds {entries - 1}" in report
    assert f"event {lost} credited but never debited" in report, report
    assert done.poor.user not in report, report


async def test_an_audit_whose_ledger_of_record_is_unreachable_says_so_and_fails(
    fresh_valkey: EmbeddedValkey, short_tmp: Path
) -> None:
    nowhere = f"postgresql://postgres:@/postgres?host={short_tmp}"  # no server listens there
    code, out = await audit_cli("--redis-url", fresh_valkey.url, "--database-url", nowhere)
    assert code == 2, out
    assert "the ledger of record (PostgreSQL) is unreachable" in out, out
    assert "Traceback" not in out, out
