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

Across both stores, a ledger is read as PostgreSQL's archived rows and then Valkey's tail
(store/audit_reading.py); the report is store/audit_report.py. This module is the checks of one
pass, which read best together (~350 lines).

One module (~345 lines): the checks above, over one pass of the books (its reading and its
report are modules of their own).
"""

from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from giftstream.store import keys
from giftstream.store.audit_reading import (
    Picture,
    Reader,
    archive_lag,
    no_entries,
    read_picture,
)
from giftstream.store.audit_report import AuditReport
from giftstream.store.connection import HashReply, Redis, text

# Ledger entries read per XRANGE: a read of a whole ledger held the server up (131 ms for one
# call) and the audit's memory grew with the ledgers (229 MB for 220k gifts).
LEDGER_PAGE = 1000
# Platform accounts into which an asset flows and stays (the rest of the platform's accounts
# are sources, whose balances are negative: what they issued).
SINKS = {
    "coins": ("platform:spent", "platform:refunds", "platform:chests"),
    "diamonds": ("platform:payouts",),
    "points": ("platform:points_redeemed",),
}


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


# Per archived ledger stream: the entries its cursor says were copied, and the rows held up to
# it (one snapshot: rows and cursor commit together). A difference is a row gone missing.
COUNTS_SQL = (
    "SELECT c.stream, c.entries, (SELECT count(*) FROM ledger_entries l WHERE l.stream = c.stream"
    " AND (l.entry_ms, l.entry_seq) <= (c.last_ms, c.last_seq)) AS rows"
    " FROM archive_cursors c WHERE c.stream LIKE '%:ledger' ORDER BY c.stream"
)


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


def _whole(reader: Reader, key: str, picture: Picture) -> None:
    if reader.ledger is None and not picture.whole:
        reader.report.problems.append(
            f"{key} is trimmed in Valkey (archived in PostgreSQL): audit with --database-url"
        )


async def _audit_user(
    reader: Reader,
    user: str,
    report: AuditReport,
    books: _Books,
    debits: dict[str, _Debit],
    page: int,
) -> Picture:
    r = reader.r
    picture = await read_picture(r, keys.account(user), keys.user_ledger(user), keys.outbox(user))
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
    entries = (
        reader.entries(ledger, None, picture.last_id, page) if picture.last_id else no_entries()
    )
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
    reader: Reader,
    room: str,
    report: AuditReport,
    books: _Books,
    credits: dict[str, _Credit],
    page: int,
) -> None:
    picture = await read_picture(reader.r, keys.room(room), keys.room_ledger(room))
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
    entries = (
        reader.entries(ledger, None, picture.last_id, page) if picture.last_id else no_entries()
    )
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


async def _debited_since(
    reader: Reader, credits: dict[str, _Credit], pictures: dict[str, Picture], page: int
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
    reader = Reader(r, ledger, report)
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
    pictures: dict[str, Picture] = {}
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
