"""The reconnect schedule: exponential backoff with full jitter, bounded in attempts and time."""

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """How the client retries a connection.

    The wait before attempt *n* (from 0) is drawn uniformly from [0, ceiling(n)], where the
    ceiling starts at `base_s` and is multiplied by `factor` up to `max_delay_s` ("full jitter":
    clients cut off together do not come back together). The client gives up after
    `max_attempts` attempts in a row, or when the next wait would end more than
    `max_elapsed_s` after the first attempt, raising `ConnectionFailed`.

    >>> import itertools
    >>> policy = Backoff(base_s=0.5, max_delay_s=4.0)
    >>> list(itertools.islice(policy.ceilings(), 6))
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    """

    base_s: float = 0.1
    max_delay_s: float = 5.0
    factor: float = 2.0
    max_attempts: int = 10
    max_elapsed_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_delay_s:
            raise ValueError("Backoff needs 0 < base_s <= max_delay_s")
        if self.factor < 1:
            raise ValueError("Backoff needs factor >= 1")
        if self.max_attempts < 1 or self.max_elapsed_s <= 0:
            raise ValueError("Backoff needs max_attempts >= 1 and max_elapsed_s > 0")

    def ceilings(self) -> Iterator[float]:
        """The upper bound of each wait: base_s, base_s * factor, ... up to max_delay_s."""
        ceiling = self.base_s
        while True:
            yield ceiling
            ceiling = min(self.max_delay_s, ceiling * self.factor)

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The wait before each attempt, in seconds: never above its ceiling nor max_delay_s."""
        for ceiling in self.ceilings():
            yield rng.uniform(0.0, ceiling)
