"""The archiver: copies every ledger entry (users' and rooms' ledgers) and every room event from
Valkey to PostgreSQL, the ledger of record, exactly once.

One archiver is active per deployment: it holds a lease in Valkey (renewed every pass) whose
fencing token PostgreSQL checks in every batch, so an archiver that lost its lease without
noticing cannot write. Each batch is one transaction: the rows (`ON CONFLICT DO NOTHING`, so a
batch re-sent after a crash changes nothing) and the cursor of each stream it covers. A new
holder resumes from the cursors. The gift path never waits for it, and while PostgreSQL is down
it retries with backoff while the lag metrics rise (Valkey buffers the backlog).

Once a batch has committed, the users' and rooms' ledger streams it covers are trimmed in Valkey
(XTRIM MINID, exact) up to their cursor, keeping only entries younger than `archive_keep_s`: Valkey
holds the unarchived tail and a short margin, PostgreSQL everything. A stream only ever loses
entries its committed cursor covers, so the audit can read PostgreSQL up to a cursor and Valkey
after it (store/audit.py). A room's event stream keeps its replay window, the last
`room_history_max` events, and is trimmed here only below both the window and its cursor; the
gift Function bounds it at the window plus `room_history_backlog`, the backlog Valkey buffers
while PostgreSQL is down.

The rooms' `credited` records (the dedupe of credits) are pruned once their credit is archived,
older than the hot window (`idempotency_hot_s`, a margin for a credit still in flight), and gone
from its viewer's outbox: an outbox entry is written once, by the debit, and removed only once
credited, so no credit of it can come again (a replay's credit comes from the outbox too).

The stored answers of gift requests are deleted once their gift is archived and older than the
hot window (`idempotency_hot_s`): a replay after that finds no answer in Valkey, the user's
filter of request ids says it may have been seen, and the gift path answers it from PostgreSQL
(gifting.py, functions/gifts.lua). Only gifts whose entry carries the `fp` hash are pruned so:
an older one's filter never had its id.
"""

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import msgpack
from redis.asyncio.cluster import RedisCluster

from giftstream import metrics
from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.connection import Redis, StreamEntries, fcall, text
from giftstream.store.postgres import close_pool, connect_pool
from giftstream.store.relay import store_time_ms

log = logging.getLogger(__name__)

STREAM_PATTERNS = (keys.USER_LEDGER_PATTERN, keys.ROOM_LEDGER_PATTERN, keys.ROOM_EVENTS_PATTERN)
USER_STREAM_PREFIX = keys.PREFIX + ":{u:"
# Streams asked about per pipeline.
PIPELINE_STREAMS = 500


class Fenced(Exception):
    """PostgreSQL has accepted a batch from a newer lease: this archiver is no longer active."""


@dataclass
class Cursor:
    ms: int = 0
    seq: int = 0
    entries: int = 0

    @property
    def id(self) -> str:
        return f"{self.ms}-{self.seq}"

    @property
    def position(self) -> tuple[int, int]:
        return self.ms, self.seq


def split_id(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def is_ledger(stream: str) -> bool:
    """A users' or rooms' ledger stream (trimmed once archived), not a room's event stream."""
    return stream.endswith(":ledger")


def is_user_ledger(stream: str) -> bool:
    return stream.startswith(USER_STREAM_PREFIX) and is_ledger(stream)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _int(value: str | None) -> int | None:
    return int(value) if value else None


LEDGER_COLUMNS = (
    ("stream", "text"),
    ("entry_ms", "bigint"),
    ("entry_seq", "bigint"),
    ("owner_kind", "text"),
    ("owner", "text"),
    ("kind", "text"),
    ("ref", "text"),
    ("balance", "bigint"),
    ("coins", "bigint"),
    ("diamonds", "bigint"),
    ("points", "bigint"),
    ("postings", "text"),
    ("room", "text"),
    ("host", "text"),
    ("sender", "text"),
    ("gift", "text"),
    ("gift_count", "integer"),
    ("gift_coins", "bigint"),
    ("request_id", "text"),
    ("amount", "text"),
    ("currency", "text"),
    ("channel", "text"),
    ("region", "text"),
    ("at", "timestamptz"),
    ("fields", "jsonb"),
)
EVENT_COLUMNS = (
    ("stream", "text"),
    ('"offset"', "bigint"),
    ("room", "text"),
    ("type", "text"),
    ("event", "text"),
    ("sender", "text"),
    ("gift", "text"),
    ("coins", "bigint"),
    ("diamonds", "bigint"),
    ("at", "timestamptz"),
    ("payload", "jsonb"),
)


# A batch's rows go by binary COPY into a temporary table of the connection (emptied at every
# commit), then into the table with `ON CONFLICT DO NOTHING` (COPY alone cannot skip rows sent
# before). Binary COPY encodes each value by its column's codec: about half the client CPU of a
# multi-row INSERT of arrays, which checks the type of every element.
LEDGER_STAGE = "archive_ledger_stage"
EVENTS_STAGE = "archive_events_stage"


def _stage(stage: str, columns: tuple[tuple[str, str], ...]) -> str:
    names = ", ".join(f"{name} {kind}" for name, kind in columns)
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ({names}) ON COMMIT DELETE ROWS"


def _insert(table: str, stage: str, columns: tuple[tuple[str, str], ...], conflict: str) -> str:
    names = ", ".join(name for name, _ in columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "
        f"ON CONFLICT ({conflict}) DO NOTHING"
    )


def _copy_names(columns: tuple[tuple[str, str], ...]) -> list[str]:
    """Column names as COPY takes them (it quotes them itself)."""
    return [name.strip('"') for name, _ in columns]


STAGE_TABLES = (_stage(LEDGER_STAGE, LEDGER_COLUMNS), _stage(EVENTS_STAGE, EVENT_COLUMNS))
INSERT_LEDGER = _insert(
    "ledger_entries", LEDGER_STAGE, LEDGER_COLUMNS, "stream, entry_ms, entry_seq"
)
INSERT_EVENTS = _insert("room_events", EVENTS_STAGE, EVENT_COLUMNS, 'stream, "offset"')
LEDGER_NAMES = _copy_names(LEDGER_COLUMNS)
EVENT_NAMES = _copy_names(EVENT_COLUMNS)
# The archived credits after a position (time order) and older than a time: their rooms'
# `credited` records may be pruned.
CREDITS_TO_PRUNE = (
    "SELECT stream, entry_ms, entry_seq, ref, sender FROM ledger_entries "
    "WHERE kind = 'credit' AND owner_kind = 'room' "
    "AND (entry_ms, entry_seq, stream) > ($1, $2, $3) AND entry_ms < $4 "
    "ORDER BY entry_ms, entry_seq, stream LIMIT $5"
)
# The archived gifts after a position (time order) and older than a time: their stored answers
# may be deleted (`hashed`: the entry has the fingerprint hash a replay is answered with).
ANSWERS_TO_PRUNE = (
    "SELECT stream, entry_ms, entry_seq, owner, request_id, fields ? 'fp' AS hashed "
    "FROM ledger_entries WHERE kind = 'gift' AND owner_kind = 'user' "
    "AND (entry_ms, entry_seq, stream) > ($1, $2, $3) AND entry_ms < $4 "
    "ORDER BY entry_ms, entry_seq, stream LIMIT $5"
)
# A cursor only moves forward, whoever writes it.
UPSERT_CURSORS = (
    "INSERT INTO archive_cursors (stream, last_ms, last_seq, entries) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) "
    "ON CONFLICT (stream) DO UPDATE SET last_ms = EXCLUDED.last_ms, "
    "last_seq = EXCLUDED.last_seq, entries = EXCLUDED.entries, updated_at = now() "
    "WHERE (archive_cursors.last_ms, archive_cursors.last_seq) "
    "< (EXCLUDED.last_ms, EXCLUDED.last_seq)"
)
# The fence only rises; a lower one means a newer archiver has written (no row comes back).
CHECK_FENCE = "UPDATE archive_fence SET fence = $1 WHERE id = 1 AND fence <= $1 RETURNING fence"


def deltas(postings: str) -> dict[str, int]:
    """Change per asset of the ledger's owner: the postings to accounts that are not the
    platform's ('user:<id> coins -5;platform:spent coins 5' → {'coins': -5})."""
    out: dict[str, int] = {}
    for part in postings.split(";"):
        if not part:
            continue
        account, asset, amount = part.split(" ")
        if not account.startswith("platform:"):
            out[asset] = out.get(asset, 0) + int(amount)
    return out


def _host(postings: str) -> str | None:
    for part in postings.split(";"):
        account = part.split(" ", 1)[0]
        if account.startswith("host:"):
            return account.removeprefix("host:")
    return None


def ledger_row(stream: str, entry_id: bytes, f: dict[bytes, bytes]) -> tuple[Any, ...]:
    ms, seq = split_id(entry_id)
    # Decoded once: the columns and the `fields` JSON are read from it (an empty field is none).
    d = {k.decode(): v.decode(errors="replace") for k, v in f.items()}
    get = d.get
    postings = get("post", "")
    change = deltas(postings)
    owner_kind = "user" if stream.startswith(USER_STREAM_PREFIX) else "room"
    return (
        stream,
        ms,
        seq,
        owner_kind,
        keys.user_from_account(stream),
        d["kind"],
        get("ref", ""),
        int(get("balance") or 0),
        change.get("coins", 0),
        change.get("diamonds", 0),
        change.get("points", 0),
        postings,
        get("room") or (keys.room_from_key(stream) if owner_kind == "room" else None),
        get("host") or _host(postings),
        get("from") or None,
        get("gift") or None,
        _int(get("count")),
        _int(get("coins")),
        get("request") or None,
        get("price") or get("amount") or None,
        get("currency") or None,
        get("channel") or None,
        get("region") or None,
        _at(_int(get("ts")) or ms),
        json.dumps(d),
    )


def event_row(stream: str, entry_id: bytes, f: dict[bytes, bytes]) -> tuple[Any, ...]:
    offset, _ = split_id(entry_id)
    p: dict[str, Any] = msgpack.unpackb(f[b"f"], raw=False)
    ts = p.get("ts")
    return (
        stream,
        offset,
        keys.room_from_key(stream),
        str(p.get("t", "")),
        p.get("event"),
        p.get("from"),
        p.get("gift"),
        p.get("coins"),
        p.get("diamonds"),
        _at(int(ts)) if ts is not None else None,
        json.dumps(p),
    )


# Where each kind of row keeps its time (an event's id is its room offset, not a time).
AT = {
    ledger_row: [name for name, _ in LEDGER_COLUMNS].index("at"),
    event_row: [name for name, _ in EVENT_COLUMNS].index("at"),
}


@dataclass
class Batch:
    ledger: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    cursors: dict[str, Cursor] = field(default_factory=dict)


async def used_memory(r: Redis) -> int:
    if isinstance(r, RedisCluster):
        replies = await r.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(node["used_memory"]) for node in replies.values())
    return int((await r.info("memory"))["used_memory"])


async def find_streams(r: Redis) -> set[str]:
    found: set[str] = set()
    for pattern in STREAM_PATTERNS:
        async for key in r.scan_iter(match=pattern, count=1000, _type="stream"):
            found.add(text(key))
    return found


class Archiver:
    def __init__(self, redis: Redis, database_url: str, settings: Settings) -> None:
        self.redis = redis
        self.database_url = database_url
        self.settings = settings
        self.token = secrets.token_hex(8)
        self.fence = 0
        self.pool: asyncpg.Pool | None = None
        self.cursors: dict[str, Cursor] = {}
        self.streams: set[str] = set()
        self.scanned_at = -math.inf
        # Per stream, as last read: its length, and its last id and entries added (XINFO).
        self.lengths: dict[str, int] = {}
        self.heads: dict[str, tuple[tuple[int, int], int]] = {}
        self.swept_at = -math.inf
        # Ledger streams archived further than they are trimmed (the margin kept them): stream
        # -> its cursor, trimmed again on a later pass.
        self.untrimmed: dict[str, tuple[int, int]] = {}
        # Pruning `credited`: the archived credit pruned up to (read from Valkey first), when it
        # last ran and whether it stopped at a full page, and (room, event) -> viewer of the
        # credits whose event an outbox still held (tried again each time).
        self.pruned: tuple[int, int, str] | None = None
        self.pruned_at = -math.inf
        self.prune_more = False
        self.held: dict[tuple[str, str], str] = {}
        # Deleting stored answers: the archived gift they are deleted up to, when it last ran
        # and whether it stopped at a full page.
        self.answered: tuple[int, int, str] | None = None
        self.answered_at = -math.inf
        self.answers_more = False

    async def run(self) -> None:
        """Archive until cancelled; every failure is logged and retried with backoff."""
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
                self.fence = 0
                metrics.ARCHIVE_ACTIVE.set(0)
            except Exception as e:
                metrics.ARCHIVE_FAILURES.inc()
                log.warning("archive pass failed (retrying in %.1f s): %r", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, s.archive_backoff_max_s)

    async def aclose(self) -> None:
        if self.fence:
            try:
                await fcall(
                    self.redis, "giftstream_archive_release", [keys.ARCHIVE_LEASE], [self.token]
                )
            except Exception as e:
                log.warning("could not release the archive lease: %r", e)
        if self.pool is not None:
            await close_pool(self.pool)

    async def connected(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await connect_pool(self.database_url, max_size=2, init=_stage_tables)
        return self.pool

    async def step(self) -> bool:
        """One pass; True when a stream has more to copy right away."""
        metrics.VALKEY_USED_MEMORY.set(await used_memory(self.redis))
        if not await self.hold_lease():
            metrics.ARCHIVE_ACTIVE.set(0)
            return False
        metrics.ARCHIVE_ACTIVE.set(1)
        if time.monotonic() - self.scanned_at >= self.settings.archive_scan_interval_s:
            self.streams |= await find_streams(self.redis)
            self.scanned_at = time.monotonic()
        batch, more = await self.read()
        if batch.cursors:
            await self.write(batch)
        await self.trim()
        await self.prune()
        await self.prune_answers()
        return more

    async def hold_lease(self) -> bool:
        s = self.settings
        if self.fence:
            fence = int(
                await fcall(
                    self.redis,
                    "giftstream_archive_lease",
                    [keys.ARCHIVE_LEASE, keys.ARCHIVE_FENCE],
                    [self.token, s.archive_lease_ms, 0],
                )
            )
            if fence == self.fence:
                return True
            # Lost (or lapsed and taken anew): PostgreSQL may have moved on; start over.
            self.fence = 0
            if fence == 0:
                return False
        pool = await self.connected()
        floor = int(await pool.fetchval("SELECT fence FROM archive_fence WHERE id = 1"))
        fence = int(
            await fcall(
                self.redis,
                "giftstream_archive_lease",
                [keys.ARCHIVE_LEASE, keys.ARCHIVE_FENCE],
                [self.token, s.archive_lease_ms, floor],
            )
        )
        if fence == 0:
            return False
        rows = await pool.fetch("SELECT stream, last_ms, last_seq, entries FROM archive_cursors")
        self.cursors = {
            r["stream"]: Cursor(r["last_ms"], r["last_seq"], r["entries"]) for r in rows
        }
        self.streams |= set(self.cursors)
        self.fence = fence
        log.info("archiver active (fence %d, %d streams known)", fence, len(self.cursors))
        return True

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
            if sweep or length != self.lengths.get(key) or self._behind(key)
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
            key: max(1, added - self._cursor(key).entries)
            for key, (_, added) in self.heads.items()
            if self._behind(key)
        }

    def _behind(self, key: str) -> bool:
        """The stream's last entry, as last seen, is past its cursor."""
        head = self.heads.get(key)
        return head is not None and head[0] > self._position(key)

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
        order = sorted(pending, key=lambda k: self._position(k))
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
            pipe.xrange(key, min="(" + self._cursor(key).id, max="+", count=count)
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

    def _cursor(self, key: str) -> Cursor:
        return self.cursors.get(key, Cursor())

    def _position(self, key: str) -> tuple[int, int]:
        c = self._cursor(key)
        return c.ms, c.seq

    def _add(self, batch: Batch, key: str, entries: StreamEntries) -> float:
        """Add a stream's entries to the batch; returns when the first one happened (ms)."""
        rows = batch.events if key.endswith(":events") else batch.ledger
        make = event_row if key.endswith(":events") else ledger_row
        for entry_id, f in entries:
            rows.append(make(key, entry_id, f))
        ms, seq = split_id(entries[-1][0])
        batch.cursors[key] = Cursor(ms, seq, self._cursor(key).entries + len(entries))
        first: datetime | None = rows[-len(entries)][AT[make]]
        return first.timestamp() * 1000 if first is not None else time.time() * 1000

    async def write(self, batch: Batch) -> None:
        pool = await self.connected()
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(CHECK_FENCE, self.fence) is None:
                raise Fenced
            ledger = events = 0
            if batch.ledger:
                await conn.copy_records_to_table(
                    LEDGER_STAGE, records=batch.ledger, columns=LEDGER_NAMES
                )
                ledger = _inserted(await conn.execute(INSERT_LEDGER))
            if batch.events:
                await conn.copy_records_to_table(
                    EVENTS_STAGE, records=batch.events, columns=EVENT_NAMES
                )
                events = _inserted(await conn.execute(INSERT_EVENTS))
            await conn.execute(UPSERT_CURSORS, *_cursor_columns(batch.cursors.items()))
        metrics.ARCHIVE_BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.ARCHIVED_ROWS.labels("ledger_entries").inc(ledger)
        metrics.ARCHIVED_ROWS.labels("room_events").inc(events)
        self.cursors.update(batch.cursors)
        for key, cursor in batch.cursors.items():
            self.untrimmed[key] = cursor.position

    def _floor(self, key: str, now_ms: int) -> tuple[int, int]:
        """The last id a stream may lose whatever is archived: a ledger's entries younger than
        `archive_keep_s` stay (its ids are the store's time in ms); a room's last
        `room_history_max` events stay (its ids are offsets)."""
        if is_ledger(key):
            return now_ms - int(self.settings.archive_keep_s * 1000), 0
        head = self.heads.get(key)
        last = head[0][0] if head is not None else 0
        return last - self.settings.room_history_max, 0

    async def trim(self) -> None:
        """Trim each stream up to its committed cursor and its floor."""
        if not self.untrimmed:
            return
        now_ms = await store_time_ms(self.redis)
        due = [
            (key, min(cursor, self._floor(key, now_ms))) for key, cursor in self.untrimmed.items()
        ]
        pipe = self.redis.pipeline(transaction=False)
        for key, (ms, seq) in due:
            # MINID keeps ids >= it: everything up to and including (ms, seq) goes.
            pipe.xtrim(key, minid=f"{ms}-{seq + 1}", approximate=False)
        trimmed = await pipe.execute(raise_on_error=False)
        for (key, upto), reply in zip(due, trimmed, strict=True):
            if not isinstance(reply, Exception):
                metrics.ARCHIVE_TRIMMED.labels("ledger" if is_ledger(key) else "events").inc(
                    int(reply)
                )
                if key in self.lengths:
                    # Its length as last read, less what went: unchanged next pass unless new
                    # entries came (then it gets an XINFO, see pending()).
                    self.lengths[key] -= int(reply)
                # A room's window only moves with new events, which a later batch brings; a
                # ledger's margin moves with time, so it is trimmed again until its cursor.
                if not is_ledger(key) or upto == self.untrimmed.get(key):
                    del self.untrimmed[key]

    async def prune(self) -> None:
        """Delete the `credited` records of the archived credits older than the hot window
        whose event is no longer in its viewer's outbox."""
        s = self.settings
        if not self.prune_more and time.monotonic() - self.pruned_at < s.archive_scan_interval_s:
            return
        self.pruned_at = time.monotonic()
        if self.pruned is None:
            self.pruned = await load_position(self.redis, keys.ARCHIVE_PRUNED)
        floor = await store_time_ms(self.redis) - s.idempotency_hot_s * 1000
        pool = await self.connected()
        rows = await pool.fetch(CREDITS_TO_PRUNE, *self.pruned, floor, s.archive_batch_rows)
        self.prune_more = len(rows) == s.archive_batch_rows
        candidates = dict(self.held)
        for row in rows:
            candidates[(keys.room_from_key(row["stream"]), row["ref"])] = row["sender"] or ""
        if not candidates:
            return
        items = list(candidates.items())
        pipe = self.redis.pipeline(transaction=False)
        for (_, event), viewer in items:
            pipe.hexists(keys.outbox(viewer), event)
        in_outbox = await pipe.execute()
        self.held = {}
        pipe = self.redis.pipeline(transaction=False)
        for ((room, event), viewer), held in zip(items, in_outbox, strict=True):
            if held:
                self.held[(room, event)] = viewer
            else:
                pipe.hdel(keys.room_credited(room), event)
        pruned = sum(int(n) for n in await pipe.execute())
        metrics.ARCHIVE_PRUNED.inc(pruned)
        if rows:
            self.pruned = await save_position(self.redis, keys.ARCHIVE_PRUNED, rows[-1])

    async def prune_answers(self) -> None:
        """Delete the stored answers of the archived gifts older than the hot window, and older
        than every users' ledger entry not yet archived (a stream behind its cursor may hold
        gifts older than the window that PostgreSQL has yet to get)."""
        s = self.settings
        due = time.monotonic() - self.answered_at >= s.archive_scan_interval_s
        if not (due or self.answers_more):
            return
        self.answered_at = time.monotonic()
        if self.answered is None:
            self.answered = await load_position(self.redis, keys.ARCHIVE_ANSWERS_PRUNED)
        behind = [
            self._cursor(key).ms for key in self.heads if is_user_ledger(key) and self._behind(key)
        ]
        now_ms = await store_time_ms(self.redis)
        floor = min([now_ms - s.idempotency_hot_s * 1000, *behind])
        pool = await self.connected()
        rows = await pool.fetch(ANSWERS_TO_PRUNE, *self.answered, floor, s.archive_batch_rows)
        self.answers_more = len(rows) == s.archive_batch_rows
        if not rows:
            return
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            if row["hashed"]:
                pipe.delete(keys.gift_request(row["owner"], row["request_id"]))
        deleted = sum(int(n) for n in await pipe.execute())
        metrics.ANSWERS_PRUNED.inc(deleted)
        self.answered = await save_position(self.redis, keys.ARCHIVE_ANSWERS_PRUNED, rows[-1])


async def load_position(r: Redis, key: str) -> tuple[int, int, str]:
    """A walk's position over the archived entries, kept in Valkey as 'ms seq stream'."""
    stored = await r.get(key)
    ms, seq, stream = text(stored).split(" ", 2) if stored else ("0", "0", "")
    return int(ms), int(seq), stream


async def save_position(r: Redis, key: str, last: asyncpg.Record) -> tuple[int, int, str]:
    position = (int(last["entry_ms"]), int(last["entry_seq"]), str(last["stream"]))
    await r.set(key, " ".join(str(x) for x in position))
    return position


async def _stage_tables(conn: asyncpg.Connection) -> None:
    for sql in STAGE_TABLES:
        await conn.execute(sql)


def _inserted(status: str) -> int:
    """Rows inserted, from a command status such as 'INSERT 0 12'."""
    return int(status.rsplit(" ", 1)[-1])


def _cursor_columns(cursors: Iterable[tuple[str, Cursor]]) -> list[list[Any]]:
    items = list(cursors)
    return [
        [k for k, _ in items],
        [c.ms for _, c in items],
        [c.seq for _, c in items],
        [c.entries for _, c in items],
    ]
