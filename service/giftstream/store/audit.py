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
"""

from collections import defaultdict
from dataclasses import dataclass, field

from giftstream.store import keys
from giftstream.store.connection import HashReply, Redis, read_hash, read_stream, text

# Platform accounts into which an asset flows and stays (the rest of the platform's accounts
# are sources, whose balances are negative: what they issued).
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
            f" in flight {self.gifts_in_flight}",
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


async def _audit_user(
    r: Redis, user: str, report: AuditReport, books: _Books, debits: dict[str, _Debit]
) -> None:
    acct = await read_hash(r, keys.account(user))
    coins, points = _int(acct, b"coins"), _int(acct, b"points")
    report.users += 1
    report.coins_held += coins
    report.points_held += points
    if coins < 0:
        report.problems.append(f"user {user}: negative balance {coins}")
    wallet = f"user:{user}"
    running = {"coins": 0, "points": 0}
    first_broken: str | None = None
    for entry_id, e in await read_stream(r, keys.user_ledger(user)):
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
            cost = -sum(a for acc, asset, a in postings if acc == wallet and asset == "coins")
            debits[event] = _Debit(user, text(e[b"room"]), cost)
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


async def _audit_room(
    r: Redis, room: str, report: AuditReport, books: _Books, credits: dict[str, tuple[str, int]]
) -> None:
    state = await read_hash(r, keys.room(room))
    diamonds = _int(state, b"diamonds")
    host = f"host:{text(state.get(b'host', b''))}"
    report.rooms += 1
    report.diamonds_held += diamonds
    if diamonds < 0:
        report.problems.append(f"room {room}: negative diamonds {diamonds}")
    running = carry = 0
    first_broken: str | None = None
    for entry_id, e in await read_stream(r, keys.room_ledger(room)):
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
            credits[event] = (room, coins)
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


async def run_audit(r: Redis) -> AuditReport:
    report = AuditReport()
    books = _Books()
    debits: dict[str, _Debit] = {}
    credits: dict[str, tuple[str, int]] = {}
    in_flight: set[str] = set()
    async for key in r.scan_iter(match=keys.USER_ACCOUNT_PATTERN, count=1000, _type="hash"):
        user = keys.user_from_account(text(key))
        await _audit_user(r, user, report, books, debits)
        in_flight.update(text(e) for e in await r.hkeys(keys.outbox(user)))
    async for key in r.scan_iter(match=keys.ROOM_PATTERN, count=1000, _type="hash"):
        await _audit_room(r, keys.room_from_key(text(key)), report, books, credits)

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
        room, coins = credited
        if room != debit.room or coins != debit.coins:
            report.problems.append(
                f"event {event}: debited {debit.coins} for room {debit.room},"
                f" credited {coins} in room {room}"
            )
    for event in credits.keys() - debits.keys():
        report.problems.append(f"event {event} credited but never debited")
    _conservation(report, books)
    report.problems.sort()
    return report
