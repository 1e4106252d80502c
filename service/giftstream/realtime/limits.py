"""Connection limits of one worker: connections per user and per IP, and connection attempts per
IP per second (a token bucket). The gift rate, shared by all workers, lives in the debit Function.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field

from giftstream import metrics
from giftstream.settings import Settings

# Buckets of addresses not seen for this long are forgotten.
IDLE_BUCKET_S = 60.0


@dataclass
class ConnectionLimits:
    settings: Settings
    per_ip: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_user: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    attempts: dict[str, tuple[float, float]] = field(default_factory=dict)

    def attempt(self, ip: str) -> bool:
        """Take one connection attempt from the address's bucket; False when it is empty."""
        if ip in self.settings.trusted_ips:
            return True
        now = time.monotonic()
        rate = self.settings.connection_attempts_per_ip_per_s
        if len(self.attempts) > 10_000:
            self.attempts = {k: v for k, v in self.attempts.items() if now - v[1] < IDLE_BUCKET_S}
        tokens, at = self.attempts.get(ip, (rate, now))
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens < 1:
            metrics.LIMITED.labels("connection_attempts_per_ip").inc()
            return False
        self.attempts[ip] = (tokens - 1, now)
        return True

    def open_ip(self, ip: str) -> bool:
        if ip in self.settings.trusted_ips:
            return True
        if self.per_ip[ip] >= self.settings.max_connections_per_ip:
            metrics.LIMITED.labels("connections_per_ip").inc()
            return False
        self.per_ip[ip] += 1
        return True

    def close_ip(self, ip: str) -> None:
        if ip in self.settings.trusted_ips:
            return
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    def open_user(self, user: str) -> bool:
        if self.per_user[user] >= self.settings.max_connections_per_user:
            metrics.LIMITED.labels("connections_per_user").inc()
            return False
        self.per_user[user] += 1
        return True

    def close_user(self, user: str) -> None:
        self.per_user[user] -= 1
        if self.per_user[user] <= 0:
            del self.per_user[user]


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Programs send no Origin; a browser's page must come from this server or an allowed one."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return host is not None and origin.split("://", 1)[-1] == host
