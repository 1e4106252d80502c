"""The audit's reading of both stores (store/audit.py says in which order): each account at one
moment with its ledger's last id and its outbox, a ledger across PostgreSQL and Valkey, and the
archive's lag.

Across both stores: the archiver trims a ledger stream in Valkey only up to the cursor it has
committed in PostgreSQL, so a ledger is read as PostgreSQL's rows up to a cursor fixed first,
then Valkey's entries strictly after it. If the cursor has moved by the time the Valkey tail is
read, the archiver may have trimmed some of that tail meanwhile: the read goes round again from
the cursor it fixed (every row up to it was read once). No entry is counted twice or missed.
Without PostgreSQL (`ledger=None`) only Valkey is read, and a ledger trimmed there is a problem.
"""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from redis.exceptions import ResponseError

from giftstream.store import keys
from giftstream.store.audit_report import AuditReport
from giftstream.store.connection import HashReply, Redis, read_stream, text


@dataclass(frozen=True, slots=True)
class Picture:
    """One account (or room) as it stood at one moment, with its ledger's last id then (None:
    no ledger yet) and whether Valkey still holds every entry of it."""

    state: HashReply
    last_id: bytes | None
    outbox: frozenset[str] = frozenset()
    whole: bool = True


async def read_picture(r: Redis, state: str, ledger: str, outbox: str | None = None) -> Picture:
    """The hash `state`, the last id of `ledger` and the events in `outbox`, at one moment. The
    last id is the stream's last generated one: a stream trimmed to nothing still has it."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.hgetall(state)
        pipe.xinfo_stream(ledger)
        if outbox is not None:
            pipe.hkeys(outbox)
        replies = await pipe.execute(raise_on_error=False)
    for reply in (replies[0], *replies[2:]):
        if isinstance(reply, Exception):
            raise reply
    info = replies[1]
    if isinstance(info, Exception):  # no such stream: no ledger entry yet
        last, whole = None, True
    else:
        last, whole = info["last-generated-id"], info["entries-added"] == info["length"]
    return Picture(
        cast(HashReply, replies[0]),
        last,
        frozenset(text(e) for e in replies[2]) if outbox is not None else frozenset(),
        whole,
    )


Position = tuple[int, int]
BEFORE_ALL: Position = (0, 0)
CURSOR_SQL = "SELECT last_ms, last_seq FROM archive_cursors WHERE stream = $1"
ROWS_SQL = (
    "SELECT entry_ms, entry_seq, fields FROM ledger_entries WHERE stream = $1 "
    "AND (entry_ms, entry_seq) > ($2, $3) AND (entry_ms, entry_seq) <= ($4, $5) "
    "ORDER BY entry_ms, entry_seq LIMIT $6"
)
LAG_SQL = "SELECT stream, last_ms, last_seq, entries FROM archive_cursors"


def entry_position(entry_id: bytes | str) -> Position:
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _fields(raw: str) -> HashReply:
    """A row's `fields` (the entry as Valkey held it) as Valkey returns an entry."""
    loaded: dict[str, str] = json.loads(raw)
    return {k.encode(): v.encode() for k, v in loaded.items()}


class Reader:
    """Reads a ledger across both stores: PostgreSQL's rows up to a cursor, Valkey after it."""

    def __init__(self, r: Redis, ledger: asyncpg.Pool | None, report: AuditReport) -> None:
        self.r = r
        self.ledger = ledger
        self.report = report

    async def cursor(self, key: str) -> Position:
        assert self.ledger is not None
        row = await self.ledger.fetchrow(CURSOR_SQL, key)
        return BEFORE_ALL if row is None else (row["last_ms"], row["last_seq"])

    async def entries(
        self, key: str, after: bytes | None, upto: bytes | None, page: int
    ) -> AsyncIterator[tuple[bytes, HashReply]]:
        """The entries of the ledger `key` after `after` (None: from the first) up to `upto`
        (None: the end), in order, each once, `page` at a time (no read holds a server up)."""
        position = BEFORE_ALL if after is None else entry_position(after)
        if upto is None:
            # To the end as it is now: a fixed end, so that the reads below cannot chase a
            # ledger that keeps growing.
            try:
                upto = (await self.r.xinfo_stream(key))["last-generated-id"]
            except ResponseError:  # no such stream
                return
        end = entry_position(upto)
        if self.ledger is None:
            async for entry in self._valkey(key, position, end, page):
                self.report.entries_in_valkey += 1
                yield entry
            return
        while True:
            fixed = await self.cursor(key)
            archived_to = min(fixed, end)
            async for entry in self._postgres(key, position, archived_to, page):
                self.report.entries_archived += 1
                yield entry
            position = max(position, archived_to)
            if fixed >= end:
                return
            tail = [entry async for entry in self._valkey(key, position, end, page)]
            if await self.cursor(key) == fixed:
                # Nothing past `fixed` can have been trimmed: the tail is whole.
                self.report.entries_in_valkey += len(tail)
                for entry in tail:
                    yield entry
                return

    async def _postgres(
        self, key: str, after: Position, upto: Position, page: int
    ) -> AsyncIterator[tuple[bytes, HashReply]]:
        assert self.ledger is not None
        while after < upto:
            rows = await self.ledger.fetch(ROWS_SQL, key, *after, *upto, page)
            for row in rows:
                yield f"{row['entry_ms']}-{row['entry_seq']}".encode(), _fields(row["fields"])
            if len(rows) < page:
                return
            after = (rows[-1]["entry_ms"], rows[-1]["entry_seq"])

    async def _valkey(
        self, key: str, after: Position, upto: Position, page: int
    ) -> AsyncIterator[tuple[bytes, HashReply]]:
        start = "-" if after == BEFORE_ALL else f"({after[0]}-{after[1]}"
        end = f"{upto[0]}-{upto[1]}"
        while True:
            batch = await read_stream(self.r, key, start, count=page, end=end)
            for entry in batch:
                yield entry
            if len(batch) < page:
                return
            start = f"({text(batch[-1][0])}"


async def archive_lag(r: Redis, ledger: asyncpg.Pool) -> tuple[int, float]:
    """Entries of the ledger streams not yet archived, and the age of the oldest (s)."""
    rows = await ledger.fetch(LAG_SQL)
    cursors = {row["stream"]: row for row in rows}
    streams: list[str] = []
    for pattern in (keys.USER_LEDGER_PATTERN, keys.ROOM_LEDGER_PATTERN):
        async for key in r.scan_iter(match=pattern, count=1000, _type="stream"):
            streams.append(text(key))
    entries, oldest = 0, None
    for key in sorted(set(streams)):
        info: dict[str, Any] = await r.xinfo_stream(key)
        row = cursors.get(key)
        done = (row["last_ms"], row["last_seq"]) if row is not None else BEFORE_ALL
        behind = int(info["entries-added"]) - (row["entries"] if row is not None else 0)
        if behind <= 0 or entry_position(info["last-generated-id"]) <= done:
            continue
        entries += behind
        first = await read_stream(r, key, f"({done[0]}-{done[1]}", count=1)
        if first:
            ms = entry_position(first[0][0])[0]
            oldest = ms if oldest is None else min(oldest, ms)
    now_s, micros = await r.time()
    now = int(now_s) * 1000 + int(micros) // 1000
    return entries, 0.0 if oldest is None else max(0.0, (now - oldest) / 1000)


async def no_entries() -> AsyncIterator[tuple[bytes, HashReply]]:
    """No entries (a ledger with none yet)."""
    nothing: list[tuple[bytes, HashReply]] = []
    for entry in nothing:
        yield entry
