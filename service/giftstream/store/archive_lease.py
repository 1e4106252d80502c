"""The archiver's lease: one archiver is active per deployment, the one holding the lease in
Valkey (`giftstream_archive_lease`, archive.lua), renewed every pass. Its fencing token is taken
above PostgreSQL's fence, which every batch raises (store/archive_writing.py), so an archiver
that lost its lease without noticing cannot write."""

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

    async def _lease(self, floor: int) -> int:
        return int(
            await fcall(
                self.redis,
                "giftstream_archive_lease",
                [keys.ARCHIVE_LEASE, keys.ARCHIVE_FENCE],
                [self.token, self.settings.archive_lease_ms, floor],
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
