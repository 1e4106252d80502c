"""What the ledger of record serves: a user's history, the operator's statement export, and the
summary of a day. Reads PostgreSQL only (the rows the archiver has copied)."""

import asyncio
import base64
import binascii
import csv
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO

import asyncpg

from giftstream.errors import InvalidField
from giftstream.store.postgres import close_pool, connect_pool, migrate

# The columns of an exported statement, in order.
EXPORT_COLUMNS = (
    "at",
    "stream",
    "entry",
    "owner_kind",
    "owner",
    "kind",
    "ref",
    "coins",
    "diamonds",
    "points",
    "balance",
    "room",
    "host",
    "sender",
    "gift",
    "gift_count",
    "gift_coins",
    "request_id",
    "amount",
    "currency",
    "channel",
    "region",
    "postings",
)
EXPORT_SQL = (
    "SELECT at, stream, entry_ms || '-' || entry_seq AS entry, owner_kind, owner, kind, ref, "
    "coins, diamonds, points, balance, room, host, sender, gift, gift_count, gift_coins, "
    "request_id, amount, currency, channel, region, postings FROM ledger_entries "
    "WHERE at >= $1 AND at < $2 ORDER BY at, stream, entry_ms, entry_seq"
)
# Rows fetched at a time by the export's server-side cursor.
EXPORT_PREFETCH = 1000
HISTORY_SQL = (
    "SELECT stream, entry_ms, entry_seq, owner_kind, kind, ref, coins, diamonds, points, "
    "balance, room, sender, gift, gift_count, gift_coins, request_id, amount, currency "
    "FROM ledger_entries WHERE stream = ANY($1::text[]) "
    "AND (entry_ms, entry_seq, stream) < ($2, $3, $4) "
    "ORDER BY entry_ms DESC, entry_seq DESC, stream DESC LIMIT $5"
)
# Past every real position: the first page.
FIRST = (2**62, 0, "")
# The archived gift of a user's request id (a replay past the hot window is answered from it).
GIFT_ANSWER_SQL = (
    "SELECT ref, balance, fields->>'fp' AS fp FROM ledger_entries "
    "WHERE owner = $1 AND request_id = $2 AND kind = 'gift' AND owner_kind = 'user' LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class ArchivedGift:
    event: str
    balance: int
    # The hash of the request's content (None on an entry archived before it was recorded).
    fingerprint_hash: str | None


class LedgerUnreachable(Exception):
    """PostgreSQL did not answer."""


class Ledger:
    """A lazily connected pool for the reads of the HTTP API: a worker starts, and gifting goes
    on, while PostgreSQL is down; only the reads of the ledger fail."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()

    async def connected(self) -> asyncpg.Pool:
        async with self._connecting:
            if self.pool is None:
                try:
                    self.pool = await connect_pool(self.url)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                    raise LedgerUnreachable(str(e)) from e
            return self.pool

    async def aclose(self) -> None:
        if self.pool is not None:
            await close_pool(self.pool)

    async def history(
        self, streams: list[str], cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The entries of `streams`, newest first, after `cursor`; and the next page's cursor
        (None on the last page)."""
        ms, seq, stream = decode_cursor(cursor) if cursor else FIRST
        pool = await self.connected()
        try:
            rows = await pool.fetch(HISTORY_SQL, streams, ms, seq, stream, limit + 1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            raise LedgerUnreachable(str(e)) from e
        page = [history_entry(r) for r in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        last = rows[limit - 1]
        return page, encode_cursor(last["entry_ms"], last["entry_seq"], last["stream"])

    async def gift_answer(self, user: str, request_id: str) -> ArchivedGift | None:
        """The archived gift of `user`'s request id, if there is one."""
        pool = await self.connected()
        try:
            row = await pool.fetchrow(GIFT_ANSWER_SQL, user, request_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            raise LedgerUnreachable(str(e)) from e
        if row is None:
            return None
        return ArchivedGift(row["ref"], row["balance"], row["fp"])


def encode_cursor(ms: int, seq: int, stream: str) -> str:
    raw = json.dumps([ms, seq, stream], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ms, seq, stream = json.loads(raw)
    except (ValueError, TypeError, binascii.Error) as e:
        raise InvalidField("'cursor' must be a cursor from a previous page") from e
    if not (isinstance(ms, int) and isinstance(seq, int) and isinstance(stream, str)):
        raise InvalidField("'cursor' must be a cursor from a previous page")
    return ms, seq, stream


def history_entry(r: asyncpg.Record) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"{r['entry_ms']}-{r['entry_seq']}",
        "ledger": "coins" if r["owner_kind"] == "user" else "diamonds",
        "kind": r["kind"],
        "ref": r["ref"],
        "coins": r["coins"],
        "diamonds": r["diamonds"],
        "points": r["points"],
        "balance": r["balance"],
        "ts": r["entry_ms"],
    }
    optional = {
        "room": r["room"],
        "from": r["sender"],
        "gift": r["gift"],
        "count": r["gift_count"],
        "gift_coins": r["gift_coins"],
        "request": r["request_id"],
        "amount": r["amount"],
        "currency": r["currency"],
    }
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry


def parse_when(value: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC unless it says otherwise)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"not an ISO date or date-time: {value!r}") from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return "" if value is None else str(value)


async def export_rows(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> AsyncIterator[dict[str, Any]]:
    async with conn.transaction():
        async for r in conn.cursor(EXPORT_SQL, start, end, prefetch=EXPORT_PREFETCH):
            yield {c: r[c] for c in EXPORT_COLUMNS}


async def export(url: str, start: datetime, end: datetime, fmt: str, out: TextIO) -> int:
    """Write the entries from `start` (inclusive) to `end` (exclusive) as CSV or JSON lines;
    returns how many."""
    conn = await asyncpg.connect(url)
    count = 0
    try:
        await migrate(conn)
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_COLUMNS)
        async for row in export_rows(conn, start, end):
            if writer is not None:
                writer.writerow([_cell(row[c]) for c in EXPORT_COLUMNS])
            else:
                out.write(json.dumps({c: _json(row[c]) for c in EXPORT_COLUMNS}) + "\n")
            count += 1
    finally:
        await conn.close()
    return count


def _json(value: Any) -> Any:
    return _cell(value) if isinstance(value, datetime) else value


@dataclass
class Summary:
    day: date
    sales: list[dict[str, Any]]
    diamonds_credited: int
    gift_coins_credited: int
    diamonds_paid_out: int

    @property
    def commission_coins(self) -> int:
        """Coins of the gifts credited that did not become the hosts' diamonds."""
        return self.gift_coins_credited - self.diamonds_credited

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "sales": self.sales,
            "diamonds_credited": self.diamonds_credited,
            "gift_coins_credited": self.gift_coins_credited,
            "commission_coins": self.commission_coins,
            "diamonds_paid_out": self.diamonds_paid_out,
        }


async def summary(url: str, day: date) -> Summary:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        sales = await conn.fetch(
            "SELECT coalesce(region, '') AS region, coalesce(channel, '') AS channel, "
            "coalesce(currency, '') AS currency, count(*) AS purchases, "
            "sum(-(regexp_match(postings, 'platform:sales coins (-?[0-9]+)'))[1]::bigint) AS sold, "
            "sum(coins) AS coins, "
            "sum(amount::numeric) AS amount FROM ledger_entries "
            "WHERE kind = 'purchase' AND at >= $1 AND at < $2 "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            start,
            end,
        )
        credits = await conn.fetchrow(
            "SELECT coalesce(sum(diamonds) FILTER (WHERE kind = 'credit'), 0) AS diamonds, "
            "coalesce(sum(gift_coins) FILTER (WHERE kind = 'credit'), 0) AS gift_coins, "
            "coalesce(-sum(diamonds) FILTER (WHERE kind = 'payout'), 0) AS paid_out "
            "FROM ledger_entries WHERE owner_kind = 'room' AND at >= $1 AND at < $2",
            start,
            end,
        )
    finally:
        await conn.close()
    assert credits is not None
    return Summary(
        day=day,
        sales=[
            {
                "region": r["region"],
                "channel": r["channel"],
                "currency": r["currency"],
                "purchases": r["purchases"],
                "coins_sold": int(r["sold"] or 0),
                "coins_credited": int(r["coins"]),
                "amount": str(r["amount"] or 0),
            }
            for r in sales
        ],
        diamonds_credited=int(credits["diamonds"]),
        gift_coins_credited=int(credits["gift_coins"]),
        diamonds_paid_out=int(credits["paid_out"]),
    )
