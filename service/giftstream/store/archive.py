"""The archiver: copies every ledger entry (users' and rooms' ledgers) and every room event from
Valkey to PostgreSQL, the ledger of record, exactly once.

One archiver is active per deployment: it holds a lease in Valkey (renewed every pass) whose
fencing token PostgreSQL checks in every batch, so an archiver that lost its lease without
noticing cannot write. Each batch is one transaction: the rows (`ON CONFLICT DO NOTHING`, so a
batch re-sent after a crash changes nothing) and the cursor of each stream it covers. A new
holder resumes from the cursors. The gift path never waits for it, and while PostgreSQL is down
it retries with backoff while the lag metrics rise (Valkey buffers the backlog). Once a batch
has committed, what it covers is trimmed and pruned from Valkey.

This module runs the passes; each job has its module: archive_lease.py (the lease and fence),
archive_reading.py (which streams have new entries, the next batch), archive_rows.py (an entry
as a row), archive_writing.py (the batch's transaction) and archive_pruning.py (the trimming and
pruning after it).
"""

import asyncio
import logging

import asyncpg
from redis.asyncio.cluster import RedisCluster

from giftstream import metrics
from giftstream.settings import Settings
from giftstream.store.archive_lease import Lease
from giftstream.store.archive_pruning import Pruner
from giftstream.store.archive_reading import StreamReader
from giftstream.store.archive_rows import Batch, Cursor
from giftstream.store.archive_writing import Fenced, stage_tables, write_batch
from giftstream.store.connection import Redis
from giftstream.store.postgres import close_pool, connect_pool

__all__ = ["Archiver", "Fenced"]

log = logging.getLogger(__name__)


async def used_memory(r: Redis) -> int:
    if isinstance(r, RedisCluster):
        replies = await r.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(node["used_memory"]) for node in replies.values())
    return int((await r.info("memory"))["used_memory"])


class Archiver:
    def __init__(self, redis: Redis, database_url: str, settings: Settings) -> None:
        self.redis = redis
        self.database_url = database_url
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.lease = Lease(redis, settings)
        self.reader = StreamReader(redis, settings)
        self.pruner = Pruner(redis, settings, self.reader)

    @property
    def fence(self) -> int:
        """The fencing token of the lease held (0: not active)."""
        return self.lease.fence

    async def run(self) -> None:
        """Archive until cancelled; every failure is logged and retried with backoff."""
        keeper = asyncio.create_task(self.lease.keep(), name="archive lease")
        try:
            await self._passes()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _passes(self) -> None:
        s = self.settings
        backoff = s.archive_interval_s
        while True:
            try:
                more = await self.step()
                backoff = s.archive_interval_s
                if more:
                    continue
                await asyncio.sleep(s.archive_interval_s)
            except asyncio.CancelledError:
                raise
            except Fenced:
                log.warning("a newer archiver has written to PostgreSQL: standing down")
                self.lease.fence = 0
                metrics.ARCHIVE_ACTIVE.set(0)
            except Exception as e:
                metrics.ARCHIVE_FAILURES.inc()
                log.warning("archive pass failed (retrying in %.1f s): %r", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, s.archive_backoff_max_s)

    async def aclose(self) -> None:
        await self.lease.release()
        if self.pool is not None:
            await close_pool(self.pool)

    async def connected(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await connect_pool(self.database_url, max_size=2, init=stage_tables)
        return self.pool

    async def step(self) -> bool:
        """One pass; True when a stream has more to copy right away."""
        metrics.VALKEY_USED_MEMORY.set(await used_memory(self.redis))
        if not await self.hold_lease():
            metrics.ARCHIVE_ACTIVE.set(0)
            return False
        metrics.ARCHIVE_ACTIVE.set(1)
        await self.reader.scan()
        batch, more = await self.read()
        if batch.cursors:
            if not await self.renewed():
                return True
            await self.write(batch)
        if not await self.renewed():
            return True
        await self.pruner.trim()
        pool = await self.connected()
        await self.pruner.prune(pool)
        await self.pruner.prune_answers(pool)
        return more

    async def hold_lease(self) -> bool:
        """Hold the lease; on taking it, resume from the cursors committed in PostgreSQL."""
        held = self.lease.fence
        fence = await self.lease.hold(self.connected)
        if fence == 0:
            return False
        if fence == held:
            return True
        pool = await self.connected()
        rows = await pool.fetch("SELECT stream, last_ms, last_seq, entries FROM archive_cursors")
        self.reader.cursors = {
            r["stream"]: Cursor(r["last_ms"], r["last_seq"], r["entries"]) for r in rows
        }
        self.reader.streams |= set(self.reader.cursors)
        self.lease.fence = fence
        log.info("archiver active (fence %d, %d streams known)", fence, len(self.reader.cursors))
        return True

    async def renewed(self) -> bool:
        """Renew the lease between the phases of a pass, which under load can outlast it: a
        lease that lapsed mid-pass would be taken anew with a higher fence, and the batch read
        under the old one refused. False if it was lost: the pass stops there."""
        fence = self.lease.fence
        return await self.hold_lease() and self.lease.fence == fence

    async def read(self) -> tuple[Batch, bool]:
        """The next batch (StreamReader.read)."""
        return await self.reader.read()

    async def write(self, batch: Batch) -> None:
        """Commit a batch; raises Fenced if a newer archiver has written."""
        await write_batch(await self.connected(), self.lease.fence, batch)
        self.reader.cursors.update(batch.cursors)
        self.pruner.archived(batch.cursors)
