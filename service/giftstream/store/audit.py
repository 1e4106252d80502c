"""The audit: proves from the ledgers that no coin, diamond or point was created or lost.

Every ledger entry is double entry: its postings (account, asset, amount) sum to zero per asset.
The audit checks, naming the first broken entry of each ledger:
  1. every entry balances, per asset;
  2. every user's ledger replays to the account's coins and points (the running coin balance of
     each entry too), and no balance is negative;
  3. every room's ledger replays to its host's diamonds, and each credit follows the diamond rule
     exactly (coins * rate + carry before = diamonds * denominator + carry after);
  4. every gift debited is credited exactly once, to its room, for the same coins, or is still in
     its viewer's outbox (in flight); nothing is credited that was never debited;
  5. conservation, from the balances actually held: coins issued (sales, promotions, rewards,
     dev grants) = coins held + coins spent + coins clawed back by refunds + coins in chests not
     yet paid out (escrow); diamonds issued =
     diamonds held + diamonds paid out; points issued = points held + points redeemed.

It reads a live store as consistently as a single pass can: each account is read together with
its ledger's last id and its outbox (one transaction on its slot), and its ledger only up to that
id, in pages; every user before any room, so a gift whose debit an account's picture holds is,
by the time its room is read, either credited or still in that outbox (the credit comes before
the outbox entry is removed). A credit whose debit came after its viewer's picture is looked up
again past it before being called a problem.

Across both stores: the archiver trims a ledger stream in Valkey only up to the cursor it has
committed in PostgreSQL, so a ledger is read as PostgreSQL's rows up to a cursor fixed first,
then Valkey's entries strictly after it. If the cursor has moved by the time the Valkey tail is
read, the archiver may have trimmed some of that tail meanwhile: the read goes round again from
the cursor it fixed (every row up to it was read once). No entry is counted twice or missed.
Without PostgreSQL (`ledger=None`) only Valkey is read, and a ledger trimmed there is a problem.
"""

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
from redis.exceptions import ResponseError

from giftstream.store import keys
from giftstream.store.connection import HashReply, Redis, read_stream, text

# Platform accounts into which an asset flows and stays (the rest of the platform's accounts
# are sources, whose balances are negative: what they issued).
# Ledger entries read per XRANGE: a read of a whole ledger held the server up (131 ms for one
# call) and the audit's memory grew with the ledgers (229 MB for 220k gifts).
LEDGER_PAGE = 1000
SINKS = {
    "coins": ("platform:spent", "platform:refunds", "platform:chests"),
    "diamonds": ("platform:payouts",),
    "points": ("platform:points_redeemed",),
}


@dataclass
class AuditReport:
    users: int = 0
    rooms: int = 0
    entries: int = 0
    coins_granted: int = 0
    coins_held: int = 0
    coins_spent: int = 0
    coins_refunded: int = 0
    coins_in_chests: int = 0
    diamonds_issued: int = 0
    diamonds_held: int = 0
    diamonds_paid_out: int = 0
    points_issued: int = 0
    points_held: int = 0
    points_redeemed: int = 0
    gifts_debited: int = 0
    gifts_credited: int = 0
    gifts_in_flight: int = 0
    # Debited after their viewer's account was read, and credited before their room was.
    gifts_during_audit: int = 0
    # Ledger entries read from PostgreSQL (archived) and from Valkey (the tail not yet trimmed).
    entries_archived: int = 0
    entries_in_valkey: int = 0
    # The archive's lag when the audit started: entries and seconds behind (None: no ledger).
    lag_entries: int | None = None
    lag_seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def diamonds_credited(self) -> int:
        return self.diamonds_issued

    def summary(self) -> str:
        lines = [
            f"users {self.users}, rooms {self.rooms}, ledger entries {self.entries}",
            f"coins granted {self.coins_granted} = held {self.coins_held}"
            f" + spent {self.coins_spent} + refunded {self.coins_refunded}"
            f" + in chests {self.coins_in_chests}",
            f"gifts debited {self.gifts_debited}: credited {self.gifts_credited},"
            f" in flight {self.gifts_in_flight}"
            + (
                f"; {self.gifts_during_audit} more debited and credited while the audit ran"
                if self.gifts_during_audit
                else ""
            ),
            f"diamonds credited {self.diamonds_issued} = held {self.diamonds_held}"
            f" + paid out {self.diamonds_paid_out}",
            f"points issued {self.points_issued} = held {self.points_held}"
            f" + redeemed {self.points_redeemed}",
        ]
        if self.lag_entries is not None:
            lines.append(
                f"ledger entries read: {self.entries_archived} archived in PostgreSQL"
                f" + {self.entries_in_valkey} in Valkey; archive lag {self.lag_entries} entries,"
                f" {self.lag_seconds or 0:.1f} s"
            )
        if self.clean:
            lines.append("audit clean: every coin, diamond and point is accounted for")
        else:
            lines.append(f"audit FAILED: {len(self.problems)} problem(s)")
            lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Debit:
    user: str
    room: str
    coins: int


@dataclass(frozen=True, slots=True)
class _Credit:
    room: str
    coins: int
    sender: str


@dataclass(frozen=True, slots=True)
class _Picture:
    """One account (or room) as it stood at one moment, with its ledger's last id then (None:
    no ledger yet) and whether Valkey still holds every entry of it."""

    state: HashReply
    last_id: bytes | None
    outbox: frozenset[str] = frozenset()
    whole: bool = True


Postings = list[tuple[str, str, int]]


def _int(fields: HashReply, name: bytes) -> int:
    return int(fields.get(name, b"0"))


def _postings(entry: HashReply) -> Postings:
    raw = entry.get(b"post", b"").decode()
    postings: Postings = []
    for part in filter(None, raw.split(";")):
        account, asset, amount = part.split(" ")
        postings.append((account, asset, int(amount)))
    return postings


def _balanced(postings: Postings) -> bool:
    sums: dict[str, int] = defaultdict(int)
    for _, asset, amount in postings:
        sums[asset] += amount
    return all(v == 0 for v in sums.values())


def _debit(user: str, gift: HashReply) -> _Debit:
    """A `gift` entry of the user's ledger: what it took from the user, for which room."""
    wallet = f"user:{user}"
    cost = -sum(a for acc, asset, a in _postings(gift) if acc == wallet and asset == "coins")
    return _Debit(user, text(gift[b"room"]), cost)


class _Books:
    """Every posting of every ledger, summed per (account, asset)."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, postings: Postings) -> None:
        for account, asset, amount in postings:
            self.totals[(account, asset)] += amount

    def platform(self, asset: str) -> dict[str, int]:
        return {
            account: amount
            for (account, kind), amount in self.totals.items()
            if kind == asset and account.startswith("platform:")
        }


async def _picture(r: Redis, state: str, ledger: str, outbox: str | None = None) -> _Picture:
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
    return _Picture(
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
# Per archived ledger stream: the entries its cursor says were copied, and the rows held up to
# it (one snapshot: rows and cursor commit together). A difference is a row gone missing.
COUNTS_SQL = (
    "SELECT c.stream, c.entries, (SELECT count(*) FROM ledger_entries l WHERE l.stream = c.stream"
    " AND (l.entry_ms, l.entry_seq) <= (c.last_ms, c.last_seq)) AS rows"
    " FROM archive_cursors c WHERE c.stream LIKE '%:ledger' ORDER BY c.stream"
)


def _position(entry_id: bytes | str) -> Position:
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _fields(raw: str) -> HashReply:
    """A row's `fields` (the entry as Valkey held it) as Valkey returns an entry."""
    loaded: dict[str, str] = json.loads(raw)
    return {k.encode(): v.encode() for k, v in loaded.items()}


class _Reader:
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
        position = BEFORE_ALL if after is None else _position(after)
        if upto is None:
            # To the end as it is now: a fixed end, so that the reads below cannot chase a
            # ledger that keeps growing.
            try:
                upto = (await self.r.xinfo_stream(key))["last-generated-id"]
            except ResponseError:  # no such stream
                return
        end = _position(upto)
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
        if behind <= 0 or _position(info["last-generated-id"]) <= done:
            continue
        entries += behind
        first = await read_stream(r, key, f"({done[0]}-{done[1]}", count=1)
        if first:
            ms = _position(first[0][0])[0]
            oldest = ms if oldest is None else min(oldest, ms)
    now_s, micros = await r.time()
    now = int(now_s) * 1000 + int(micros) // 1000
    return entries, 0.0 if oldest is None else max(0.0, (now - oldest) / 1000)


def _whole(reader: _Reader, key: str, picture: _Picture) -> None:
    if reader.ledger is None and not picture.whole:
        reader.report.problems.append(
            f"{key} is trimmed in Valkey (archived in PostgreSQL): audit with --database-url"
        )


async def _audit_user(
    reader: _Reader,
    user: str,
    report: AuditReport,
    books: _Books,
    debits: dict[str, _Debit],
    page: int,
) -> _Picture:
    r = reader.r
    picture = await _picture(r, keys.account(user), keys.user_ledger(user), keys.outbox(user))
    _whole(reader, keys.user_ledger(user), picture)
    acct = picture.state
    coins, points = _int(acct, b"coins"), _int(acct, b"points")
    report.users += 1
    report.coins_held += coins
    report.points_held += points
    if coins < 0:
        report.problems.append(f"user {user}: negative balance {coins}")
    wallet = f"user:{user}"
    running = {"coins": 0, "points": 0}
    first_broken: str | None = None
    ledger = keys.user_ledger(user)
    entries = reader.entries(ledger, None, picture.last_id, page) if picture.last_id else _none()
    async for entry_id, e in entries:
        report.entries += 1
        postings = _postings(e)
        books.add(postings)
        for account, asset, amount in postings:
            if account == wallet and asset in running:
                running[asset] += amount
        broken = not _balanced(postings) or _int(e, b"balance") != running["coins"]
        if broken and first_broken is None:
            first_broken = text(entry_id)
        if e.get(b"kind") == b"gift":
            event = text(e[b"ref"])
            if event in debits:
                report.problems.append(f"user {user}: event {event} debited twice")
            debits[event] = _debit(user, e)
    if first_broken is not None:
        report.problems.append(f"user {user}: ledger entry {first_broken} does not balance")
    if running["coins"] != coins:
        report.problems.append(
            f"user {user}: balance {coins} but the ledger replays to {running['coins']}"
        )
    if running["points"] != points:
        report.problems.append(
            f"user {user}: {points} points but the ledger replays to {running['points']}"
        )
    return picture


async def _audit_room(
    reader: _Reader,
    room: str,
    report: AuditReport,
    books: _Books,
    credits: dict[str, _Credit],
    page: int,
) -> None:
    picture = await _picture(reader.r, keys.room(room), keys.room_ledger(room))
    _whole(reader, keys.room_ledger(room), picture)
    state = picture.state
    diamonds = _int(state, b"diamonds")
    host = f"host:{text(state.get(b'host', b''))}"
    report.rooms += 1
    report.diamonds_held += diamonds
    if diamonds < 0:
        report.problems.append(f"room {room}: negative diamonds {diamonds}")
    running = carry = 0
    first_broken: str | None = None
    ledger = keys.room_ledger(room)
    entries = reader.entries(ledger, None, picture.last_id, page) if picture.last_id else _none()
    async for entry_id, e in entries:
        report.entries += 1
        postings = _postings(e)
        books.add(postings)
        running += sum(a for acc, asset, a in postings if acc == host and asset == "diamonds")
        broken = not _balanced(postings) or _int(e, b"balance") != running
        if e.get(b"kind") == b"credit":
            event = text(e[b"ref"])
            coins, new_carry = _int(e, b"coins"), _int(e, b"carry")
            got = sum(a for acc, asset, a in postings if acc == host and asset == "diamonds")
            numerator, denominator = (int(x) for x in e.get(b"rate", b"1/1").split(b"/"))
            broken = broken or coins * numerator + carry != got * denominator + new_carry
            carry = new_carry
            if event in credits:
                report.problems.append(f"event {event} credited more than once")
            credits[event] = _Credit(room, coins, text(e.get(b"from", b"")))
        if broken and first_broken is None:
            first_broken = text(entry_id)
    if first_broken is not None:
        report.problems.append(f"room {room}: ledger entry {first_broken} does not balance")
    if running != diamonds:
        report.problems.append(
            f"room {room}: host diamonds {diamonds} but the ledger replays to {running}"
        )


def _conservation(report: AuditReport, books: _Books) -> None:
    for asset in ("coins", "diamonds", "points"):
        platform = books.platform(asset)
        sinks = {a: v for a, v in platform.items() if a in SINKS[asset]}
        issued = -sum(v for a, v in platform.items() if a not in SINKS[asset])
        if asset == "coins":
            report.coins_granted = issued
            report.coins_spent = sinks.get("platform:spent", 0)
            report.coins_refunded = sinks.get("platform:refunds", 0)
            report.coins_in_chests = sinks.get("platform:chests", 0)
            held = report.coins_held
        elif asset == "diamonds":
            report.diamonds_issued = issued
            report.diamonds_paid_out = sinks.get("platform:payouts", 0)
            held = report.diamonds_held
        else:
            report.points_issued = issued
            report.points_redeemed = sinks.get("platform:points_redeemed", 0)
            held = report.points_held
        if issued != held + sum(sinks.values()):
            report.problems.append(
                f"{asset} not conserved: issued {issued} != held {held}"
                f" + {' + '.join(f'{a} {v}' for a, v in sorted(sinks.items())) or '0'}"
            )


async def _none() -> AsyncIterator[tuple[bytes, HashReply]]:
    """No entries (a ledger with none yet)."""
    nothing: list[tuple[bytes, HashReply]] = []
    for entry in nothing:
        yield entry


async def _debited_since(
    reader: _Reader, credits: dict[str, _Credit], pictures: dict[str, _Picture], page: int
) -> dict[str, _Debit]:
    """The debits of these credits that came after their viewer's picture (or in an account
    created after the scan passed), read from the ledgers again: gifts sent during the audit."""
    late: dict[str, _Debit] = {}
    senders = {credit.sender for credit in credits.values()}
    for user in sorted(senders):
        picture = pictures.get(user)
        after = picture.last_id if picture is not None else None
        async for _, e in reader.entries(keys.user_ledger(user), after, None, page):
            event = text(e.get(b"ref", b""))
            if e.get(b"kind") == b"gift" and event in credits:
                late[event] = _debit(user, e)
    return late


def _match(debit: _Debit, event: str, credit: _Credit, report: AuditReport) -> None:
    if credit.room != debit.room or credit.coins != debit.coins:
        report.problems.append(
            f"event {event}: debited {debit.coins} for room {debit.room},"
            f" credited {credit.coins} in room {credit.room}"
        )


async def run_audit(
    r: Redis, page: int = LEDGER_PAGE, ledger: asyncpg.Pool | None = None
) -> AuditReport:
    """Audit the store behind `r` with the ledger of record `ledger` (its archived entries),
    reading the ledgers `page` entries at a time."""
    report = AuditReport()
    reader = _Reader(r, ledger, report)
    if ledger is not None:
        report.lag_entries, report.lag_seconds = await archive_lag(r, ledger)
        for row in await ledger.fetch(COUNTS_SQL):
            if row["rows"] != row["entries"]:
                report.problems.append(
                    f"{row['stream']}: {row['entries']} entries archived but PostgreSQL holds"
                    f" {row['rows']} of them"
                )
    books = _Books()
    debits: dict[str, _Debit] = {}
    credits: dict[str, _Credit] = {}
    pictures: dict[str, _Picture] = {}
    in_flight: set[str] = set()
    # SCAN may return a key more than once while the keyspace grows: each is audited once.
    async for key in r.scan_iter(match=keys.USER_ACCOUNT_PATTERN, count=1000, _type="hash"):
        user = keys.user_from_account(text(key))
        if user not in pictures:
            pictures[user] = await _audit_user(reader, user, report, books, debits, page)
            in_flight.update(pictures[user].outbox)
    # Rooms strictly after users (see the module's docstring).
    rooms: set[str] = set()
    async for key in r.scan_iter(match=keys.ROOM_PATTERN, count=1000, _type="hash"):
        room = keys.room_from_key(text(key))
        if room not in rooms:
            rooms.add(room)
            await _audit_room(reader, room, report, books, credits, page)

    report.gifts_debited = len(debits)
    for event, debit in debits.items():
        credited = credits.get(event)
        if credited is None:
            if event in in_flight:
                report.gifts_in_flight += 1
            else:
                report.problems.append(
                    f"event {event} debited from {debit.user} but never credited"
                )
            continue
        report.gifts_credited += 1
        _match(debit, event, credited, report)
    unmatched = {event: credits[event] for event in credits.keys() - debits.keys()}
    late = await _debited_since(reader, unmatched, pictures, page)
    for event, credit in unmatched.items():
        if event in late:
            report.gifts_during_audit += 1
            _match(late[event], event, credit, report)
        else:
            report.problems.append(f"event {event} credited but never debited")
    _conservation(report, books)
    report.problems.sort()
    return report
