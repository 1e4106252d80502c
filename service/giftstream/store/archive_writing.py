"""The archiver's writes to PostgreSQL: one transaction per batch that checks the fence, copies
the rows in (binary COPY into a staging table, then `INSERT … ON CONFLICT DO NOTHING`) and moves
each stream's cursor forward (store/archive.py)."""

import time
from collections.abc import Iterable
from typing import Any

import asyncpg

from giftstream import metrics
from giftstream.store.archive_rows import EVENT_COLUMNS, LEDGER_COLUMNS, Batch, Cursor


class Fenced(Exception):
    """PostgreSQL has accepted a batch from a newer lease: this archiver is no longer active."""


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


async def stage_tables(conn: asyncpg.Connection) -> None:
    """Create the staging tables on a new connection of the archiver's pool."""
    for sql in STAGE_TABLES:
        await conn.execute(sql)


async def write_batch(pool: asyncpg.Pool, fence: int, batch: Batch) -> None:
    """Write a batch in one transaction; raises Fenced (writing nothing) if a newer lease has."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(CHECK_FENCE, fence) is None:
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
