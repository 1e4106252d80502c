"""The archiver's rows: a Valkey stream entry as the PostgreSQL row it becomes (a ledger entry of
a user or room, or a room event), the columns of both tables, and a batch of them with the cursor
of each stream it covers (store/archive.py)."""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack

from giftstream.store import keys
from giftstream.store.connection import text

USER_STREAM_PREFIX = keys.PREFIX + ":{u:"


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
