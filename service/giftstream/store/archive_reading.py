"""The archiver's reading of Valkey: the ledger and event streams it finds, how far each is
copied (its cursor), which have entries after it, and the next batch of rows (store/archive.py)."""

import asyncio
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from giftstream import metrics
from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.archive_rows import AT, Batch, Cursor, event_row, ledger_row, split_id
from giftstream.store.connection import Redis, StreamEntries, text

STREAM_PATTERNS = (keys.USER_LEDGER_PATTERN, keys.ROOM_LEDGER_PATTERN, keys.ROOM_EVENTS_PATTERN)
# Streams asked about per pipeline.
PIPELINE_STREAMS = 500


async def find_streams(r: Redis) -> set[str]:
    found: set[str] = set()
    for pattern in STREAM_PATTERNS:
        async for key in r.scan_iter(match=pattern, count=1000, _type="stream"):
            found.add(text(key))
    return found


class StreamReader:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.cursors: dict[str, Cursor] = {}
        self.streams: set[str] = set()
        self.scanned_at = -math.inf
        # Per stream, as last read: its length, and its last id and entries added (XINFO).
        self.lengths: dict[str, int] = {}
        self.heads: dict[str, tuple[tuple[int, int], int]] = {}
        self.swept_at = -math.inf

    async def scan(self) -> None:
        """Look for new streams, once per scan interval."""
        if time.monotonic() - self.scanned_at >= self.settings.archive_scan_interval_s:
            self.streams |= await find_streams(self.redis)
            self.scanned_at = time.monotonic()

    async def pending(self) -> dict[str, int]:
        """Stream -> entries added and not yet copied, for the streams with any. XLEN (an integer
        each) tells which streams changed; only those, the ones still behind, and every stream
        once per scan interval (a trimmed stream's length may not change) get an XINFO."""
        streams = sorted(self.streams)
        lengths = await self._each(streams, lambda pipe, key: pipe.xlen(key))
        sweep = time.monotonic() - self.swept_at >= self.settings.archive_scan_interval_s
        ask = [
            key
            for key, length in zip(streams, lengths, strict=True)
            if sweep or length != self.lengths.get(key) or self.behind(key)
        ]
        infos = await self._each(ask, lambda pipe, key: pipe.xinfo_stream(key))
        if sweep:
            self.swept_at = time.monotonic()
        self.lengths.update(zip(streams, lengths, strict=True))
        for key, info in zip(ask, infos, strict=True):
            if isinstance(info, Exception):
                continue  # gone (deleted); nothing to copy
            self.heads[key] = (split_id(info["last-generated-id"]), int(info["entries-added"]))
        return {
            key: max(1, added - self.cursor(key).entries)
            for key, (_, added) in self.heads.items()
            if self.behind(key)
        }

    def behind(self, key: str) -> bool:
        """The stream's last entry, as last seen, is past its cursor."""
        head = self.heads.get(key)
        return head is not None and head[0] > self.cursor(key).position

    async def _each(self, streams: list[str], command: Callable[[Any, str], object]) -> list[Any]:
        """One command per stream, pipelined; a failed command's reply is its exception."""
        replies: list[Any] = []
        for i in range(0, len(streams), PIPELINE_STREAMS):
            pipe = self.redis.pipeline(transaction=False)
            for key in streams[i : i + PIPELINE_STREAMS]:
                command(pipe, key)
            replies += await pipe.execute(raise_on_error=False)
        return replies

    async def read(self) -> tuple[Batch, bool]:
        """The next batch: the entries after each stream's cursor, oldest cursors first, up to
        `archive_batch_rows` rows. Sets the lag metrics."""
        pending = await self.pending()
        metrics.ARCHIVE_LAG_ENTRIES.set(sum(pending.values()))
        budget = self.settings.archive_batch_rows
        order = sorted(pending, key=lambda k: self.cursor(k).position)
        chosen: list[tuple[str, int]] = []
        for key in order:
            if budget <= 0:
                break
            count = min(pending[key], budget)
            chosen.append((key, count))
            budget -= count
        batch = Batch()
        more = len(chosen) < len(order)
        now_ms = time.time() * 1000
        oldest = now_ms
        pipe = self.redis.pipeline(transaction=False)
        for key, count in chosen:
            pipe.xrange(key, min="(" + self.cursor(key).id, max="+", count=count)
        replies = cast(list[StreamEntries], await pipe.execute()) if chosen else []
        for (key, count), entries in zip(chosen, replies, strict=True):
            if not entries:
                continue
            more = more or (len(entries) >= count and pending[key] > count)
            oldest = min(oldest, self._add(batch, key, entries))
            await asyncio.sleep(0)  # the worker's gifts go first: yield between streams
        if not chosen:
            oldest = now_ms
        metrics.ARCHIVE_LAG_SECONDS.set(max(0.0, (now_ms - oldest) / 1000))
        return batch, more

    def cursor(self, key: str) -> Cursor:
        return self.cursors.get(key, Cursor())

    def _add(self, batch: Batch, key: str, entries: StreamEntries) -> float:
        """Add a stream's entries to the batch; returns when the first one happened (ms)."""
        rows = batch.events if key.endswith(":events") else batch.ledger
        make = event_row if key.endswith(":events") else ledger_row
        for entry_id, f in entries:
            rows.append(make(key, entry_id, f))
        ms, seq = split_id(entries[-1][0])
        batch.cursors[key] = Cursor(ms, seq, self.cursor(key).entries + len(entries))
        first: datetime | None = rows[-len(entries)][AT[make]]
        return first.timestamp() * 1000 if first is not None else time.time() * 1000
