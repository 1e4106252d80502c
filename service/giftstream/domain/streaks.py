"""When a streak (a combo of taps of one streakable gift) ends, as seen by a room.

A streak's identity and its running `repeat` are assigned atomically by the debit Function on the
viewer's slot (store/functions/gifts.lua), so taps are never counted twice, even across connections
and retries. A room watches the stream of gift events and ends a streak when its sender switches to
another gift or falls quiet for `timeout_ms`. Every worker runs its own book over the same events,
so all members see the same end without any coordination.
"""

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class StreakTap:
    """The latest tap of an open streak, as last seen in a gift event."""

    streak_id: str
    sender: str
    gift: str
    repeat: int
    seen_ms: int
    event: dict[str, object]


class StreakBook:
    """Open streaks of one room, keyed by sender."""

    # Ended streak ids remembered per room, so that a tap delivered late never reopens one.
    ENDED_MEMORY = 1024

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self._open: dict[str, StreakTap] = {}
        self._ended: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def _forget(self, ended: list[StreakTap]) -> list[StreakTap]:
        for tap in ended:
            self._ended[tap.streak_id] = None
        while len(self._ended) > self.ENDED_MEMORY:
            del self._ended[next(iter(self._ended))]
        return ended

    def observe(self, tap: StreakTap) -> list[StreakTap]:
        """Record a tap; return the sender's previous streak if this tap ends it."""
        if tap.streak_id in self._ended:
            return []
        previous = self._open.get(tap.sender)
        if previous is not None and previous.streak_id == tap.streak_id:
            if tap.repeat >= previous.repeat:
                self._open[tap.sender] = tap
            else:
                # An older tap delivered late: keep the higher count, refresh the clock.
                self._open[tap.sender] = replace(previous, seen_ms=tap.seen_ms)
            return []
        self._open[tap.sender] = tap
        return self._forget([previous] if previous is not None else [])

    def close_sender(self, sender: str) -> list[StreakTap]:
        """End the sender's open streak now (e.g. a non-streakable gift interrupts it)."""
        previous = self._open.pop(sender, None)
        return self._forget([previous] if previous is not None else [])

    def expire(self, now_ms: int) -> list[StreakTap]:
        """End and return every streak quiet for at least `timeout_ms`."""
        ended = [t for t in self._open.values() if now_ms - t.seen_ms >= self.timeout_ms]
        for tap in ended:
            del self._open[tap.sender]
        return self._forget(ended)
