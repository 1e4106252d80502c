"""The archiver's lease: one archiver is active per deployment, the one holding the lease in
Valkey (`giftstream_archive_lease`, archive.lua), renewed by each pass and, in between, by a
keeper every third of the lease (`keep`): under load a phase of a pass can outlast the lease,
and a lease that lapsed mid-pass would be taken anew, the pass's work thrown away. Its fencing
token is taken
above PostgreSQL's fence, which every batch raises (store/archive_writing.py), so an archiver
that lost its lease without noticing cannot write."""

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import asyncpg

from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.connection import Redis, fcall

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.token = secrets.token_hex(8)
        # The fence held, once the holder has read its cursors (0: not held).
        self.fence = 0

    async def hold(self, connect: Callable[[], Awaitable[asyncpg.Pool]]) -> int:
        """Renew the lease held, or take it: the fence now held (0: another archiver holds it).
        One other than `fence` was just taken: the caller sets `fence` once it has read the
        cursors."""
        if self.fence:
            fence = await self._lease(0)
            if fence == self.fence:
                return fence
            # Lost (or lapsed and taken anew): PostgreSQL may have moved on; start over.
            self.fence = 0
            if fence == 0:
                return 0
        pool = await connect()
        floor = int(await pool.fetchval("SELECT fence FROM archive_fence WHERE id = 1"))
        return await self._lease(floor)

    async def keep(self) -> None:
        """Renew the lease held every third of its length, until cancelled; a lease found lost
        is let go (`fence` 0: the next batch is refused by PostgreSQL's fence, and the next pass
        takes the lease anew if it is free)."""
        while True:
            await asyncio.sleep(self.settings.archive_lease_ms / 3000)
            if not self.fence:
                continue
            try:
                fence = await self._lease(0, renew_only=True)
            except Exception as e:  # the store is down: the passes fail and retry too
                log.warning("could not renew the archive lease: %r", e)
                continue
            if fence != self.fence:
                log.warning("the archive lease was lost (fence %d)", self.fence)
                self.fence = 0

    async def _lease(self, floor: int, renew_only: bool = False) -> int:
        return int(
            await fcall(
                self.redis,
                "giftstream_archive_lease",
                [keys.ARCHIVE_LEASE, keys.ARCHIVE_FENCE],
                [self.token, self.settings.archive_lease_ms, floor, "1" if renew_only else "0"],
            )
        )

    async def release(self) -> None:
        if not self.fence:
            return
        try:
            await fcall(
                self.redis, "giftstream_archive_release", [keys.ARCHIVE_LEASE], [self.token]
            )
        except Exception as e:
            log.warning("could not release the archive lease: %r", e)
