"""The `chaos` scenario's faults and books: kill -9 a worker, then the store, on a schedule
during the load; afterwards, what the senders saw acknowledged against the store's ledgers.

The service runs with two workers on a store started apart from it (so that the store can be
killed and started again on its data). The senders are `giftstream_client.Client`s, which
re-send an unanswered gift with the same id after a reconnect or an `unavailable`; the hosts and
viewers reconnect and join again with `since`. Every gift acknowledged must be in its sender's
ledger once and credited to the host once; none may be debited or credited twice.
"""

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from giftstream.store import keys
from giftstream.store.connection import connect, read_stream
from loadtest.procs import Tick
from loadtest.tally import Tally
from loadtest.target import Target

# When each fault strikes, as a fraction of the load's window.
KILL_WORKER_AT = 0.25
KILL_STORE_AT = 0.5
# How long the store stays down.
STORE_DOWN_S = 1.0
# The service's settings for the run: the relay picks up a killed worker's gifts quickly.
CHAOS_SETTINGS = {
    "GIFTSTREAM_RELAY_GRACE_MS": "500",
    "GIFTSTREAM_RELAY_INTERVAL_S": "0.2",
    # The books read the ledgers in Valkey: nothing archived is trimmed during the run.
    "GIFTSTREAM_ARCHIVE_KEEP_S": "86400",
}


@dataclass
class Faults:
    """What was done to the service, when (seconds into the load)."""

    done: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _t0: float = 0.0

    def watch(self, tick: Tick) -> Tick:
        """`tick`, noting when the load starts."""

        def watched(phase: str, totals: dict[str, float]) -> None:
            if phase == "load" and not self.started.is_set():
                self._t0 = time.monotonic()
                self.started.set()
            tick(phase, totals)

        return watched

    def note(self, what: str) -> None:
        self.done.append(f"{time.monotonic() - self._t0:.1f} s: {what}")


async def inflict(target: Target, duration_s: float, faults: Faults) -> None:
    """kill -9 one worker at KILL_WORKER_AT of the window, the store at KILL_STORE_AT (then
    start it again STORE_DOWN_S later, on its data)."""
    await faults.started.wait()
    await asyncio.sleep(KILL_WORKER_AT * duration_s)
    workers = target.worker_pids()
    if workers:
        os.kill(workers[0], signal.SIGKILL)
        faults.note(f"kill -9 worker {workers[0]}")
    else:
        faults.note("no worker to kill")
    await asyncio.sleep((KILL_STORE_AT - KILL_WORKER_AT) * duration_s)
    store = target.store
    if store is None:
        faults.note("no store of our own to kill")
        return
    await asyncio.to_thread(store.kill)
    if store.process is not None and store.process.stderr is not None:
        store.process.stderr.close()
    faults.note("kill -9 the store")
    await asyncio.sleep(STORE_DOWN_S)
    await asyncio.to_thread(store.start)
    faults.note("the store started again")


@dataclass
class Books:
    acked: int
    debited: int
    credited: int
    host_saw: int
    acked_not_debited: int
    acked_not_credited: int
    debited_not_credited: int
    debited_twice: int
    credited_twice: int
    host_saw_twice: int
    unanswered: int

    @property
    def clean(self) -> bool:
        return not (
            self.acked_not_debited
            or self.acked_not_credited
            or self.debited_twice
            or self.credited_twice
            or self.host_saw_twice
        )

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("gifts acked", self.acked),
            ("gifts in the senders' ledgers", self.debited),
            ("credits in the rooms' ledgers", self.credited),
            ("credits the hosts saw", self.host_saw),
            ("acked, not in a ledger (missing)", self.acked_not_debited),
            ("acked, not credited (missing)", self.acked_not_credited),
            ("debited, not credited", self.debited_not_credited),
            ("debited twice (doubled)", self.debited_twice),
            ("credited twice (doubled)", self.credited_twice),
            ("seen twice by a host (doubled)", self.host_saw_twice),
            ("never answered (charged or not)", self.unanswered),
        ]


async def read_books(
    url: str, senders: list[str], rooms: list[str], tally: Tally, settle_s: float
) -> Books:
    """The ledgers against the tally, once every debit is credited (or `settle_s` passed: the
    relay credits a killed worker's gifts)."""
    redis = connect(url)
    try:

        async def read() -> tuple[Counter[str], Counter[str], Counter[str]]:
            events: Counter[str] = Counter()
            requests: Counter[str] = Counter()
            credits: Counter[str] = Counter()
            for user in senders:
                for _, e in await read_stream(redis, keys.user_ledger(user)):
                    if e.get(b"kind") == b"gift":
                        events[e[b"ref"].decode()] += 1
                        requests[e[b"request"].decode()] += 1
            for room in rooms:
                for _, e in await read_stream(redis, keys.room_ledger(room)):
                    if e.get(b"kind") == b"credit":
                        credits[e[b"ref"].decode()] += 1
            return events, requests, credits

        deadline = time.monotonic() + settle_s
        events, requests, credits = await read()
        while set(events) - set(credits) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            events, requests, credits = await read()
    finally:
        await redis.aclose()
    acked = set(tally.sent_at)
    return Books(
        acked=len(acked),
        debited=sum(events.values()),
        credited=sum(credits.values()),
        host_saw=len(tally.credited_at),
        acked_not_debited=len(acked - set(events)),
        acked_not_credited=len(acked - set(credits)),
        debited_not_credited=len(set(events) - set(credits)),
        debited_twice=sum(n - 1 for n in requests.values() if n > 1),
        credited_twice=sum(n - 1 for n in credits.values() if n > 1),
        host_saw_twice=tally.counts["credits_doubled"],
        unanswered=tally.errors["unanswered"],
    )
