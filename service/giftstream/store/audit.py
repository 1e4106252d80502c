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
"""

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from giftstream.store import keys
from giftstream.store.connection import HashReply, Redis, StreamEntries, read_stream, text

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
    """One account (or room) as it stood at one moment, with its ledger's last id then."""

    state: HashReply
    last_id: bytes | None
    outbox: frozenset[str] = frozenset()


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
    """The hash `state`, the last id of `ledger` and the events in `outbox`, at one moment."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.hgetall(state)
        pipe.xrevrange(ledger, count=1)
        if outbox is not None:
            pipe.hkeys(outbox)
        replies = await pipe.execute()
    last = cast(StreamEntries, replies[1])
    return _Picture(
        cast(HashReply, replies[0]),
        last[0][0] if last else None,
        frozenset(text(e) for e in replies[2]) if outbox is not None else frozenset(),
    )


async def _entries(
    r: Redis, key: str, after: bytes | None, upto: bytes | None, page: int
) -> AsyncIterator[tuple[bytes, HashReply]]:
    """The entries of the stream `key` after `after` (None: from the first) up to `upto` (None:
    the end), `page` at a time, so that no read holds the server up for long."""
    start = "-" if after is None else f"({text(after)}"
    end = "+" if upto is None else text(upto)
    while True:
        batch = await read_stream(r, key, start, count=page, end=end)
        for entry in batch:
            yield entry
        if len(batch) < page:
            return
        start = f"({text(batch[-1][0])}"


async def _audit_user(
    r: Redis,
    user: str,
    report: AuditReport,
    books: _Books,
    debits: dict[str, _Debit],
    page: int,
) -> _Picture:
    picture = await _picture(r, keys.account(user), keys.user_ledger(user), keys.outbox(user))
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
    async for entry_id, e in _entries(r, keys.user_ledger(user), None, picture.last_id, page):
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
    r: Redis, room: str, report: AuditReport, books: _Books, credits: dict[str, _Credit], page: int
) -> None:
    picture = await _picture(r, keys.room(room), keys.room_ledger(room))
    state = picture.state
    diamonds = _int(state, b"diamonds")
    host = f"host:{text(state.get(b'host', b''))}"
    report.rooms += 1
    report.diamonds_held += diamonds
    if diamonds < 0:
        report.problems.append(f"room {room}: negative diamonds {diamonds}")
    running = carry = 0
    first_broken: str | None = None
    async for entry_id, e in _entries(r, keys.room_ledger(room), None, picture.last_id, page):
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
    r: Redis, credits: dict[str, _Credit], pictures: dict[str, _Picture], page: int
) -> dict[str, _Debit]:
    """The debits of these credits that came after their viewer's picture (or in an account
    created after the scan passed), read from the ledgers again: gifts sent during the audit."""
    late: dict[str, _Debit] = {}
    senders = {credit.sender for credit in credits.values()}
    for user in sorted(senders):
        picture = pictures.get(user)
        after = picture.last_id if picture is not None else None
        async for _, e in _entries(r, keys.user_ledger(user), after, None, page):
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


async def run_audit(r: Redis, page: int = LEDGER_PAGE) -> AuditReport:
    """Audit the store behind `r`, reading its ledgers `page` entries at a time."""
    report = AuditReport()
    books = _Books()
    debits: dict[str, _Debit] = {}
    credits: dict[str, _Credit] = {}
    pictures: dict[str, _Picture] = {}
    in_flight: set[str] = set()
    # SCAN may return a key more than once while the keyspace grows: each is audited once.
    async for key in r.scan_iter(match=keys.USER_ACCOUNT_PATTERN, count=1000, _type="hash"):
        user = keys.user_from_account(text(key))
        if user not in pictures:
            pictures[user] = await _audit_user(r, user, report, books, debits, page)
            in_flight.update(pictures[user].outbox)
    # Rooms strictly after users (see the module's docstring).
    rooms: set[str] = set()
    async for key in r.scan_iter(match=keys.ROOM_PATTERN, count=1000, _type="hash"):
        room = keys.room_from_key(text(key))
        if room not in rooms:
            rooms.add(room)
            await _audit_room(r, room, report, books, credits, page)

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
    late = await _debited_since(r, unmatched, pictures, page)
    for event, credit in unmatched.items():
        if event in late:
            report.gifts_during_audit += 1
            _match(late[event], event, credit, report)
        else:
            report.problems.append(f"event {event} credited but never debited")
    _conservation(report, books)
    report.problems.sort()
    return report
