"""How much one Valkey primary (one thread) spends per gift, and so its ceiling in gifts/s.

    .venv/bin/python deploy/measure_store.py [--gifts 20000] [--subscribers 0] [--url URL]

Starts the bundled Valkey (AOF on, everysec) in a temporary directory, loads the Functions,
creates users and live rooms, and runs the service's store calls for every gift, one half at a
time, from many concurrent tasks: `giftstream_gift_debit` on the viewer's slot, then
`giftstream_gift_credit` on the room's slot (which appends the events and SPUBLISHes them), then
the settle (`giftstream_outbox_settle`: the outbox entry, and the user from the slot's pending
index). `--subscribers K` opens K
pub/sub connections that each hold a sharded subscription to every room, as K service workers
with members in every room do, so the room fan-out inside Valkey is counted too. Prints
Valkey's CPU time per call of each half (INFO cpu), the ceiling it implies for one primary and
for one room's slot, and this client's CPU per call (the store calls' share of a service
worker's cost), and the store memory per gift. `--scan-keys N` then adds N keys and times one
relay pass (its read of the pending-outbox index), and, for comparison, the SCAN of every key
for outboxes that the relay ran before the index. docs/scaling.md uses these figures.
"""

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

from giftstream.domain.catalog import load_catalog
from giftstream.domain.economy import load_economy
from giftstream.gifting import Gifting, new_event_id
from giftstream.settings import Settings
from giftstream.store import accounts, keys, relay, rooms
from giftstream.store import gifts as gifts_store
from giftstream.store.connection import Redis, connect, connect_pubsub, load_functions
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.ledger import Ledger


async def cpu_seconds(redis: Redis) -> float:
    """The server's user + system CPU time (INFO cpu: its getrusage, to the microsecond)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


@dataclass(frozen=True)
class Phase:
    """One half of the gift path, run for every gift."""

    name: str
    calls: int
    seconds: float
    valkey_cpu_s: float
    client_cpu_s: float
    # Growth of the server's used memory over the phase.
    memory_bytes: int

    @property
    def valkey_us(self) -> float:
        return self.valkey_cpu_s / self.calls * 1e6

    @property
    def client_us(self) -> float:
        return self.client_cpu_s / self.calls * 1e6


def report(phases: list[Phase], subscribers: int) -> str:
    gifts = phases[0].calls
    lines = [f"{gifts} gifts, {subscribers} subscribed workers per room"]
    lines += [
        f"  {p.name:<7} valkey {p.valkey_us:7.1f} us/call   client {p.client_us:7.1f} us/call"
        f"   ({p.calls / p.seconds:,.0f} calls/s)"
        for p in phases
    ]
    valkey_us = sum(p.valkey_us for p in phases)
    credit_us = next(p.valkey_us for p in phases if p.name == "credit")
    lines += [
        f"valkey CPU per gift: {valkey_us:.1f} us -> one primary's ceiling:"
        f" {1e6 / valkey_us:,.0f} gifts/s (one room's slot: {1e6 / credit_us:,.0f} gifts/s)",
        f"client CPU per gift (the store calls of a worker): "
        f"{sum(p.client_us for p in phases):.1f} us",
        f"store memory per gift: {sum(p.memory_bytes for p in phases) / gifts:,.0f} bytes"
        " (ledger entries, room history, the stored answer until its TTL)",
    ]
    return "\n".join(lines)


async def _drain(pubsub_client: Redis, channels: list[str], stop: asyncio.Event) -> None:
    pubsub = pubsub_client.pubsub()
    for channel in channels:
        await pubsub.ssubscribe(channel)
    while not stop.is_set():
        await pubsub.get_message(timeout=0.1)
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _phase(name: str, redis: Redis, calls: Sequence[Awaitable[object]], tasks: int) -> Phase:
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:
            await call

    memory_before = await used_memory(redis)
    valkey_before, client_before = await cpu_seconds(redis), time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return Phase(
        name,
        len(calls),
        time.monotonic() - started,
        await cpu_seconds(redis) - valkey_before,
        time.process_time() - client_before,
        await used_memory(redis) - memory_before,
    )


async def measure_relay_scan(url: str, key_count: int) -> str:
    """Add `key_count` account-like keys, then time one relay pass (the pending index of every
    slot) and, for comparison, a SCAN of every key for outboxes (the relay before the index)."""
    redis = connect(url)
    run = os.urandom(3).hex()
    for start in range(0, key_count, 10_000):
        pipe = redis.pipeline(transaction=False)
        for i in range(start, min(start + 10_000, key_count)):
            pipe.hset(keys.account(f"s{run}{i}"), "coins", "0")
        await pipe.execute()
    total = int(await redis.dbsize())
    before = await cpu_seconds(redis)
    pending = [user async for user in relay.pending_users(redis, 2**62)]
    spent = await cpu_seconds(redis) - before
    before = await cpu_seconds(redis)
    outboxes = 0
    async for _ in redis.scan_iter(match=keys.OUTBOX_PATTERN, count=1000, _type="hash"):
        outboxes += 1
    scanned = await cpu_seconds(redis) - before
    await redis.aclose()
    return (
        f"relay pass over {total:,} keys ({len(pending)} outboxes): valkey {spent:.3f} s"
        f" (the index of {keys.SLOTS:,} slots)\n"
        f"a SCAN of them for outboxes ({outboxes} found): valkey {scanned:.2f} s"
        f" ({scanned / total * 1e6:.2f} us per key)"
    )


async def measure(
    url: str, gifts: int, users: int, room_count: int, tasks: int, subs: int
) -> list[Phase]:
    """Debit every gift, then credit every one, then settle every one: each half alone."""
    redis = connect(url, max_connections=tasks)
    settings = Settings(gift_rate_per_s=1e9, gift_burst=10**9)
    # Every id here is new and its debit skips the filter (checked): the ledger is never asked.
    gifting = Gifting(redis, load_catalog(), load_economy(), settings, Ledger(""))
    rose = gifting.catalog.get("rose")
    assert rose is not None
    await load_functions(redis)
    now_ms = int(time.time() * 1000)
    run = os.urandom(3).hex()
    viewers = [f"m{run}v{i}" for i in range(users)]
    for viewer in viewers:
        await accounts.create_user(redis, viewer, viewer, "US", "viewer", 10**9, now_ms, 30)
    hosts = [f"m{run}h{i}" for i in range(room_count)]
    room_ids = []
    for host in hosts:
        await accounts.create_user(redis, host, host, "US", "host", 0, now_ms, 30)
        room_ids.append((await rooms.open_room(redis, host, True, "US")).room)

    stop = asyncio.Event()
    subscriber_clients = [connect_pubsub(url) for _ in range(subs)]
    drains = [
        asyncio.create_task(_drain(c, [keys.room_channel(r) for r in room_ids], stop))
        for c in subscriber_clients
    ]
    requests = [
        gifts_store.DebitRequest(
            request_id=f"g{run}-{n}",
            fingerprint=f"{room_ids[n % room_count]}\x1frose\x1f1",
            event=new_event_id(),
            viewer=viewers[n % users],
            viewer_name=viewers[n % users],
            room=room_ids[n % room_count],
            host=hosts[n % room_count],
            gift=rose,
            count=1,
            cost=rose.coins,
        )
        for n in range(gifts)
    ]
    debited: list[gifts_store.Debited] = []

    async def debit(req: gifts_store.DebitRequest) -> None:
        done = await gifts_store.debit(redis, req, gifting.debit_rules, checked=True)
        assert done is not None  # a checked debit is never cold
        debited.append(done)

    phases = [await _phase("debit", redis, [debit(r) for r in requests], tasks)]
    payloads = {d.event: d.payload for d in debited}
    credits = [
        gifts_store.credit(redis, req.room, payloads[req.event] or b"", gifting.rules)
        for req in requests
    ]
    phases.append(await _phase("credit", redis, credits, tasks))
    settles = [gifts_store.settle(redis, req.viewer, req.event) for req in requests]
    phases.append(await _phase("settle", redis, settles, tasks))
    stop.set()
    await asyncio.gather(*drains)
    for c in subscriber_clients:
        await c.aclose()
    await redis.aclose()
    return phases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gifts", type=int, default=20_000)
    p.add_argument("--users", type=int, default=500, help="senders (each its own slot)")
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--tasks", type=int, default=64, help="gifts in flight")
    p.add_argument("--subscribers", type=int, default=0, help="workers subscribed to every room")
    p.add_argument(
        "--url",
        help="a scratch Redis/Valkey to measure (one server; it gets test users and rooms)"
        " instead of starting the bundled one",
    )
    p.add_argument(
        "--scan-keys", type=int, default=0, help="then add N keys and time a relay pass's SCAN"
    )
    args = p.parse_args()

    def run(url: str) -> str:
        phases = asyncio.run(
            measure(url, args.gifts, args.users, args.rooms, args.tasks, args.subscribers)
        )
        text = report(phases, args.subscribers)
        if args.scan_keys:
            text += "\n" + asyncio.run(measure_relay_scan(url, args.scan_keys))
        return text

    if args.url:
        text = run(args.url)
    else:
        folder = Path(tempfile.mkdtemp(prefix="gs-measure-"))
        server = EmbeddedValkey(folder / "data")
        server.start()
        try:
            text = run(server.url)
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)
    print(text)


if __name__ == "__main__":
    main()
