"""The `recharge` load of one process: users buying coins over HTTP with the dev store's test
receipts, in a mix of what a store sees — packages on every channel, custom amounts, the same
receipt again (a retry: credited once), declined and fraud-blocked cards, late payments — and
wallet reads. Every purchase's `credited` is summed per user for the coin check.
"""

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from loadtest.http import HttpConnection, HttpError, split_url
from loadtest.procs import Link
from loadtest.tally import Tally

REGION = "US"
CHANNELS = ("web", "android", "ios")
DECLINES = ("test-decline", "test-fraud", "test-parental")
# (kind, weight)
MIX = (
    ("package", 55),
    ("custom", 10),
    ("replay", 8),
    ("declined", 7),
    ("late", 5),
    ("wallet", 15),
)
# What each kind must be answered: (HTTP status, error code).
EXPECTED: dict[str, tuple[int, str | None]] = {
    "package": (200, None),
    "custom": (200, None),
    "replay": (200, None),
    "declined": (402, "payment_declined"),
    "late": (202, None),
    "wallet": (200, None),
}
REPLAYABLE = 32


@dataclass(frozen=True, slots=True)
class Buyer:
    user: str
    token: str


@dataclass(frozen=True)
class RechargePlan:
    index: int
    url: str
    buyers: tuple[Buyer, ...]
    packages: tuple[str, ...]
    duration_s: float
    # Requests per second from this process, open loop; 0: each buyer sends as answers come.
    rate: float
    run_tag: str
    timeout_s: float = 30.0

    async def run(self, link: Link) -> Tally:
        return await RechargeLoad(self, link).run()


class BuyerLoop:
    def __init__(self, plan: RechargePlan, buyer: Buyer, n: int, load: "RechargeLoad") -> None:
        host, port = split_url(plan.url)
        self.http = HttpConnection(host, port, plan.timeout_s)
        self.plan = plan
        self.buyer = buyer
        self.n = n
        self.load = load
        self.random = random.Random(f"{plan.run_tag}-{plan.index}-{n}")
        self.seq = 0
        self.paid: list[dict[str, Any]] = []
        self.late: list[str] = []
        self.unanswered: list[dict[str, Any]] = []

    def _receipt(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.plan.run_tag}-{self.plan.index}-{self.n}-{self.seq}"

    def _request(self, kind: str) -> tuple[str, str, dict[str, Any] | None]:
        """(method, path, body) of one request of `kind`."""
        r = self.random
        if kind == "replay" and self.paid:
            return "POST", "/v1/recharge", r.choice(self.paid)
        if kind == "custom":
            body = {"coins": r.randint(30, 5000), "region": REGION, "channel": "web"}
        elif kind == "declined":
            body = {"package": r.choice(self.plan.packages), "region": REGION}
        elif kind == "wallet":
            return "GET", "/v1/wallet", None
        else:
            body = {"package": r.choice(self.plan.packages), "region": REGION}
            body["channel"] = r.choice(CHANNELS)
        prefix = {"declined": r.choice(DECLINES), "late": "test-late"}.get(kind, "lt")
        body["receipt"] = self._receipt(prefix)
        return "POST", "/v1/recharge", body

    async def run(self) -> None:
        load = self.load
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        n = 0
        while load.running:
            scheduled = time.perf_counter()
            if load.interval_s > 0:
                scheduled = load.started + (n * len(self.plan.buyers) + self.n) * load.interval_s
                n += 1
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                if not load.running:
                    return
            kind = self.random.choices(kinds, weights)[0]
            if kind == "replay" and not self.paid:
                kind = "package"
            method, path, body = self._request(kind)
            await self._one(kind, method, path, body, scheduled)

    async def _one(
        self, kind: str, method: str, path: str, body: dict[str, Any] | None, scheduled: float
    ) -> None:
        tally = self.load.tally
        tally.counts["requests_sent"] += 1
        try:
            status, answer = await self.http.request(method, path, body, self.buyer.token)
        except (OSError, TimeoutError, HttpError) as e:
            tally.errors[f"{kind}:{type(e).__name__}"] += 1
            if body is not None:
                self.unanswered.append(body)
            return
        now = time.perf_counter()
        tally.counts["requests_answered"] += 1
        if now <= self.load.ends:
            tally.counts["requests_answered_in_window"] += 1
        tally.sample(f"http:{kind}", now - scheduled)
        code = answer.get("code") if status >= 400 else None
        result = f"{status} {code}" if code else str(status)
        tally.counts[f"outcome:{kind}:{result}"] += 1
        if (status, code) != EXPECTED[kind] or (kind == "replay") != bool(answer.get("replayed")):
            tally.errors[f"{kind}:{result}"] += 1
            return
        if kind in ("package", "custom"):
            tally.bought[self.buyer.user] += int(answer["credited"])
            if len(self.paid) < REPLAYABLE:
                self.paid.append(body or {})
        elif kind == "late" and body is not None:
            self.late.append(body["receipt"])

    async def settle(self) -> None:
        """Purchases still open once the window is over: late payments are settled by the
        store's notification; a purchase that got no answer is sent again (same receipt: it is
        performed once at most) to learn what it credited."""
        tally = self.load.tally
        for body in self.unanswered:
            status, answer = await self.http.request("POST", "/v1/recharge", body, self.buyer.token)
            if status == 202:
                self.late.append(body["receipt"])
            elif status == 200:
                tally.bought[self.buyer.user] += int(answer["credited"])
        for receipt in self.late:
            status, answer = await self.http.request(
                "POST", "/v1/dev/store/events", {"type": "settled", "receipt": receipt}
            )
            if status != 200:
                tally.errors[f"settle:{status}"] += 1
                continue
            tally.bought[self.buyer.user] += int(answer["credited"])
        await self.http.close()


class RechargeLoad:
    def __init__(self, plan: RechargePlan, link: Link) -> None:
        self.plan = plan
        self.link = link
        self.tally = Tally()
        self.running = False
        self.started = 0.0
        self.ends = 0.0
        self.interval_s = 1.0 / plan.rate if plan.rate > 0 else 0.0

    async def run(self) -> Tally:
        loops = [BuyerLoop(self.plan, b, n, self) for n, b in enumerate(self.plan.buyers)]
        self.tally.connections = len(loops)
        self.link.report({"connected": len(loops)})
        self.link.ready()
        await self.link.wait_go()
        cpu_before = time.process_time()
        self.started = time.perf_counter()
        self.ends = self.started + self.plan.duration_s
        self.running = True
        tasks = [asyncio.create_task(loop.run()) for loop in loops]
        reporter = asyncio.create_task(self._report_forever())
        await asyncio.sleep(self.plan.duration_s)
        self.running = False
        self.tally.window_s = time.perf_counter() - self.started
        self.tally.cpu_s = time.process_time() - cpu_before
        # Each buyer finishes the request it has in flight (bounded by the client's timeout).
        await asyncio.gather(*tasks)
        reporter.cancel()
        await asyncio.gather(*(loop.settle() for loop in loops))
        self.link.drained()
        await self.link.wait_finish()
        return self.tally

    async def _report_forever(self) -> None:
        while True:
            self.link.report(
                {
                    "connected": self.tally.connections,
                    "sent": self.tally.counts["requests_sent"],
                    "acked": self.tally.counts["requests_answered"],
                    "errors": sum(self.tally.errors.values()),
                }
            )
            await asyncio.sleep(0.25)
