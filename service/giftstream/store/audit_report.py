"""What the audit found: the totals it proves equal, and every problem, as one report."""

from dataclasses import dataclass, field


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
