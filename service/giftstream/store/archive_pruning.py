"""What the archiver removes from Valkey once a batch has committed (store/archive.py).

The users' and rooms' ledger streams a batch covers are trimmed (XTRIM MINID, exact) up to their
cursor, keeping only entries younger than `archive_keep_s`: Valkey holds the unarchived tail and
a short margin, PostgreSQL everything. A stream only ever loses entries its committed cursor
covers, so the audit can read PostgreSQL up to a cursor and Valkey after it (store/audit.py). A
room's event stream keeps its replay window, the last `room_history_max` events, and is trimmed
here only below both the window and its cursor; the gift Function bounds it at the window plus
`room_history_backlog`, the backlog Valkey buffers while PostgreSQL is down.

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

import math
import time

import asyncpg

from giftstream import metrics
from giftstream.settings import Settings
from giftstream.store import keys
from giftstream.store.archive_reading import StreamReader
from giftstream.store.archive_rows import Cursor, is_ledger, is_user_ledger
from giftstream.store.connection import Redis, text
from giftstream.store.relay import store_time_ms

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


class Pruner:
    def __init__(self, redis: Redis, settings: Settings, reader: StreamReader) -> None:
        self.redis = redis
        self.settings = settings
        self.reader = reader
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

    def archived(self, cursors: dict[str, Cursor]) -> None:
        """A batch has committed: its streams may be trimmed up to their new cursors."""
        for key, cursor in cursors.items():
            self.untrimmed[key] = cursor.position

    def _floor(self, key: str, now_ms: int) -> tuple[int, int]:
        """The last id a stream may lose whatever is archived: a ledger's entries younger than
        `archive_keep_s` stay (its ids are the store's time in ms); a room's last
        `room_history_max` events stay (its ids are offsets)."""
        if is_ledger(key):
            return now_ms - int(self.settings.archive_keep_s * 1000), 0
        head = self.reader.heads.get(key)
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
        lengths = self.reader.lengths
        for (key, upto), reply in zip(due, trimmed, strict=True):
            if not isinstance(reply, Exception):
                metrics.ARCHIVE_TRIMMED.labels("ledger" if is_ledger(key) else "events").inc(
                    int(reply)
                )
                if key in lengths:
                    # Its length as last read, less what went: unchanged next pass unless new
                    # entries came (then it gets an XINFO, see StreamReader.pending()).
                    lengths[key] -= int(reply)
                # A room's window only moves with new events, which a later batch brings; a
                # ledger's margin moves with time, so it is trimmed again until its cursor.
                if not is_ledger(key) or upto == self.untrimmed.get(key):
                    del self.untrimmed[key]

    async def prune(self, pool: asyncpg.Pool) -> None:
        """Delete the `credited` records of the archived credits older than the hot window
        whose event is no longer in its viewer's outbox."""
        s = self.settings
        if not self.prune_more and time.monotonic() - self.pruned_at < s.archive_scan_interval_s:
            return
        self.pruned_at = time.monotonic()
        if self.pruned is None:
            self.pruned = await load_position(self.redis, keys.ARCHIVE_PRUNED)
        floor = await store_time_ms(self.redis) - s.idempotency_hot_s * 1000
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

    async def prune_answers(self, pool: asyncpg.Pool) -> None:
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
        reader = self.reader
        behind = [
            reader.cursor(key).ms
            for key in reader.heads
            if is_user_ledger(key) and reader.behind(key)
        ]
        now_ms = await store_time_ms(self.redis)
        floor = min([now_ms - s.idempotency_hot_s * 1000, *behind])
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
