"""What one load process counted, merged across processes; latency percentiles."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Tally:
    """Counts and samples of one process (or of several, merged). Latencies are in seconds.
    `sent_at` and `credited_at` map a gift event to when the gift was sent and when its host saw
    the credit: they can be in different processes, so the credit latency is computed after the
    merge. `spent`, `bought` and `uncertain` are per user: coins of gifts acknowledged, coins
    credited by purchases, and coins of gifts that got no answer (charged or not: the coin check
    allows either)."""

    window_s: float = 0.0
    # CPU time (user + system) the generator spent in the window.
    cpu_s: float = 0.0
    processes: int = 1
    connections: int = 0
    members: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, array[float]] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    credited_at: dict[str, float] = field(default_factory=dict)
    spent: Counter[str] = field(default_factory=Counter)
    bought: Counter[str] = field(default_factory=Counter)
    uncertain: Counter[str] = field(default_factory=Counter)

    def sample(self, name: str, seconds: float) -> None:
        samples = self.latencies.get(name)
        if samples is None:
            samples = self.latencies[name] = array("d")
        samples.append(seconds)

    @classmethod
    def merged(cls, tallies: list[Tally]) -> Tally:
        """The processes' tallies as one; the window is the mean of theirs."""
        out = cls(processes=len(tallies))
        out.window_s = sum(t.window_s for t in tallies) / len(tallies) if tallies else 0.0
        for t in tallies:
            out.cpu_s += t.cpu_s
            out.connections += t.connections
            out.members += t.members
            out.counts.update(t.counts)
            out.errors.update(t.errors)
            for name, samples in t.latencies.items():
                out.latencies.setdefault(name, array("d")).extend(samples)
            out.sent_at.update(t.sent_at)
            out.credited_at.update(t.credited_at)
            out.spent.update(t.spent)
            out.bought.update(t.bought)
            out.uncertain.update(t.uncertain)
        return out

    def credit_latencies(self) -> array[float]:
        """Gift sent → its credit frame at the host, for every credit whose gift is known."""
        out = array("d")
        for event, seen in self.credited_at.items():
            sent = self.sent_at.get(event)
            if sent is not None:
                out.append(seen - sent)
        return out

    def per_s(self, count: str) -> float:
        return self.counts[count] / self.window_s if self.window_s > 0 else 0.0


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def latency(samples: Sequence[float]) -> Latency | None:
    """Nearest-rank percentiles, in milliseconds; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p * n) - 1)] * 1000, 3)

    return Latency(n, rank(0.50), rank(0.90), rank(0.99), round(ordered[-1] * 1000, 3))
