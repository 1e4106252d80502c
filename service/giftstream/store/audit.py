"""The audit: proves from the ledgers that no coin or diamond was created or lost.

Checks, in order, naming the first broken entry of each account:
  1. every user's ledger replays to its balance (each entry's running balance, and the final
     coins), grants and spending agree with the account's totals, and no balance is negative;
  2. every room's credit ledger replays to the host's diamonds, each credit follows the diamond
     rule exactly (coins * rate + carry before = diamonds * denominator + carry after);
  3. every gift debited is credited exactly once, to its room, for the same coins, or is still
     in its viewer's outbox (in flight); nothing is credited that was never debited;
  4. conservation: coins granted = coins held + coins spent.
"""

from dataclasses import dataclass, field

from giftstream.store import keys
from giftstream.store.connection import Redis, read_hash, read_stream, text


@dataclass
class AuditReport:
    users: int = 0
    rooms: int = 0
    coins_granted: int = 0
    coins_held: int = 0
    coins_spent: int = 0
    gifts_debited: int = 0
    gifts_credited: int = 0
    gifts_in_flight: int = 0
    diamonds_credited: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"users {self.users}, rooms {self.rooms}",
            f"coins granted {self.coins_granted} = held {self.coins_held}"
            f" + spent {self.coins_spent}",
            f"gifts debited {self.gifts_debited}: credited {self.gifts_credited},"
            f" in flight {self.gifts_in_flight}",
            f"diamonds credited {self.diamonds_credited}",
        ]
        if self.clean:
            lines.append("audit clean: every coin and diamond is accounted for")
        else:
            lines.append(f"audit FAILED: {len(self.problems)} problem(s)")
            lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Debit:
    user: str
    room: str
    coins: int


def _int(fields: dict[bytes, bytes], name: bytes) -> int:
    return int(fields.get(name, b"0"))


async def _audit_user(r: Redis, user: str, report: AuditReport, debits: dict[str, _Debit]) -> None:
    acct = await read_hash(r, keys.account(user))
    coins, granted, spent = _int(acct, b"coins"), _int(acct, b"granted"), _int(acct, b"spent")
    report.users += 1
    report.coins_held += coins
    if coins < 0:
        report.problems.append(f"user {user}: negative balance {coins}")
    running = ledger_granted = ledger_spent = 0
    first_broken: str | None = None
    for entry_id, e in await read_stream(r, keys.user_ledger(user)):
        delta = _int(e, b"coins")
        running += delta
        kind = e.get(b"kind", b"").decode()
        if kind == "grant":
            ledger_granted += delta
        elif kind == "gift":
            ledger_spent -= delta
            event = e[b"ref"].decode()
            if event in debits:
                report.problems.append(f"user {user}: event {event} debited twice")
            debits[event] = _Debit(user, e[b"room"].decode(), -delta)
        if first_broken is None and _int(e, b"balance") != running:
            first_broken = entry_id.decode()
    if first_broken is not None:
        report.problems.append(
            f"user {user}: ledger entry {first_broken} breaks the running balance"
        )
    if running != coins:
        report.problems.append(f"user {user}: balance {coins} but the ledger replays to {running}")
    if ledger_granted != granted or ledger_spent != spent:
        report.problems.append(
            f"user {user}: totals granted {granted}/spent {spent} but the ledger says"
            f" {ledger_granted}/{ledger_spent}"
        )
    report.coins_granted += ledger_granted
    report.coins_spent += ledger_spent


async def _audit_room(
    r: Redis, room: str, report: AuditReport, credits: dict[str, tuple[str, int]]
) -> None:
    state = await read_hash(r, keys.room(room))
    diamonds = _int(state, b"diamonds")
    report.rooms += 1
    running = carry = 0
    first_broken: str | None = None
    for entry_id, e in await read_stream(r, keys.room_ledger(room)):
        if e.get(b"kind") != b"credit":
            continue
        event = e[b"ref"].decode()
        coins, got, new_carry = _int(e, b"coins"), _int(e, b"diamonds"), _int(e, b"carry")
        numerator, denominator = (int(x) for x in e.get(b"rate", b"1/1").split(b"/"))
        if coins * numerator + carry != got * denominator + new_carry and first_broken is None:
            first_broken = entry_id.decode()
        carry = new_carry
        running += got
        if event in credits:
            report.problems.append(f"event {event} credited more than once")
        credits[event] = (room, coins)
    if first_broken is not None:
        report.problems.append(f"room {room}: credit {first_broken} breaks the diamond rule")
    if running != diamonds:
        report.problems.append(
            f"room {room}: host diamonds {diamonds} but the ledger replays to {running}"
        )
    report.diamonds_credited += running


async def run_audit(r: Redis) -> AuditReport:
    report = AuditReport()
    debits: dict[str, _Debit] = {}
    credits: dict[str, tuple[str, int]] = {}
    in_flight: set[str] = set()
    async for key in r.scan_iter(match=keys.USER_ACCOUNT_PATTERN, count=1000, _type="hash"):
        user = keys.user_from_account(text(key))
        await _audit_user(r, user, report, debits)
        in_flight.update(text(e) for e in await r.hkeys(keys.outbox(user)))
    async for key in r.scan_iter(match=keys.ROOM_PATTERN, count=1000, _type="hash"):
        await _audit_room(r, keys.room_from_key(text(key)), report, credits)

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
    if report.coins_granted != report.coins_held + report.coins_spent:
        report.problems.append(
            f"coins not conserved: granted {report.coins_granted} !="
            f" held {report.coins_held} + spent {report.coins_spent}"
        )
    report.problems.sort()
    return report
