"""A storm of gifts from correct clients, for the fault tests (tests/e2e/faults/), each injected
from a fixed seed so that a failure replays.

The gifting clients behave as a correct client must: they match acks by `id`, and on a lost
connection or a retryable answer (`unavailable`, `internal`, `rate_limited`) they reconnect and
re-send every gift not yet acked, with the same `id`. Afterwards the store is checked: no acked
gift is lost, none is charged twice, and `giftstream audit` is clean.
"""

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from websockets.exceptions import ConnectionClosed

from giftstream.store import keys
from giftstream.store.connection import Redis, read_hash, read_stream
from giftstream.store.embedded import EmbeddedValkey

from .api import Api
from .audit import audit
from .frames import Client, Frame
from .servers import ServerProcess
from .stores import room_history
from .users import User

SEED = 4_242
GIFT, PRICE = "confetti", 100  # not streakable: one frame per gift, never merged
COINS = 10_000_000
# Gifts as fast as the tests send them (the gift rate limit has tests of its own), and a relay
# that picks up a gift whose worker died within a fraction of a second.
STORM_ENV = {
    "GIFTSTREAM_GIFT_RATE_PER_S": "100000",
    "GIFTSTREAM_GIFT_BURST": "1000000",
    "GIFTSTREAM_RELAY_GRACE_MS": "500",
    "GIFTSTREAM_RELAY_INTERVAL_S": "0.2",
}
RETRYABLE = frozenset({"unavailable", "internal", "rate_limited"})
RECV_S = 15.0
STORM_S = 90.0
READY_S = 30.0


# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def own_valkey(data_dir: Path, aof_fsync: str) -> Iterator[EmbeddedValkey]:
    """An embedded Valkey of the test's own, stopped (or killed) however the test ends."""
    valkey = EmbeddedValkey(data_dir, aof_fsync=aof_fsync)
    valkey.start()
    try:
        yield valkey
    finally:
        valkey.stop()
        if valkey.process is not None and valkey.process.poll() is None:
            valkey.kill()


async def ready(api: Api) -> bool:
    return (await api.http.get("/readyz")).status_code == 200


async def not_ready(api: Api) -> bool:
    return (await api.http.get("/readyz")).status_code == 503


SLOW_CONSUMER_CLOSES = 'giftstream_closes_total{reason="slow_consumer"}'
FRAMES_DROPPED = "giftstream_frames_dropped_total"


async def ledger_gifts(redis: Redis, user: User) -> list[str]:
    """The event id of every gift debited in the user's ledger, in order."""
    entries = await read_stream(redis, keys.user_ledger(user.user))
    return [e[b"ref"].decode() for _, e in entries if e.get(b"kind") == b"gift"]


async def history(redis: Redis, room: str) -> Counter[tuple[str, str]]:
    """How often each (type, event) is in the room's history."""
    return Counter((f["t"], f["event"]) for f in await room_history(redis, room))


async def outboxes_empty(redis: Redis, users: list[User]) -> bool:
    for user in users:
        if await read_hash(redis, keys.outbox(user.user)):
            return False
    return True


def record(tmp_path: Path, name: str, figures: dict[str, Any]) -> None:
    """The run's figures, as JSON in the test's tmp dir, and one line on stdout."""
    (tmp_path / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


async def scene(api: Api, viewers: int, name: str = "viewer") -> tuple[User, str, list[User]]:
    """A host with a live room, and viewers with coins."""
    host = await api.user(role="host")
    room = await api.open_room(host)
    users = []
    for _ in range(viewers):
        r = await api.http.post(
            "/v1/dev/users", json={"name": name, "region": "US", "coins": COINS}
        )
        assert r.status_code == 200, r.text
        users.append(User(r.json()["user"], r.json()["token"]))
    return host, room, users


# -- a storm of gifts from correct clients ---------------------------------------------------


class Refused(Exception):
    """The server answered `auth` or `join` with an error (e.g. its store is down)."""


@dataclass
class Ack:
    event: str
    coins: int
    at: float  # time.monotonic() when it arrived


@dataclass
class Gifter:
    user: User
    tag: str
    planned: int
    sent: int = 0  # ids handed out so far: <tag>-0 .. <tag>-(sent-1)
    acked: dict[str, Ack] = field(default_factory=dict)
    resent: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    conflicts: list[str] = field(default_factory=list)

    def done(self, stopping: bool) -> bool:
        return (stopping or self.sent == self.planned) and len(self.acked) == self.sent


class Storm:
    """Viewers gifting in one room, each over one connection at a time, up to `window` gifts
    in flight each, as a correct client does (see the module's docstring)."""

    def __init__(
        self,
        ws_url: str,
        room: str,
        gifters: list[Gifter],
        rng: random.Random,
        window: int = 8,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ws_url = ws_url
        self.room = room
        self.gifters = gifters
        self.rng = rng
        self.window = window
        self.stop = stop
        self.started = time.monotonic()

    @property
    def acked(self) -> int:
        return sum(len(g.acked) for g in self.gifters)

    @property
    def planned(self) -> int:
        return sum(g.planned for g in self.gifters)

    def acks(self) -> dict[str, Ack]:
        """Every ack, by event id."""
        return {a.event: a for g in self.gifters for a in g.acked.values()}

    async def run(self) -> None:
        await asyncio.gather(*(self._gift(g) for g in self.gifters))

    async def _gift(self, g: Gifter) -> None:
        failures = 0
        while not g.done(self.stop()):
            assert time.monotonic() - self.started < STORM_S, f"{g.tag}: storm not over"
            client: Client | None = None
            try:
                # max_queue=None: the client buffers every frame not read yet. One whose buffer
                # is full stops reading its socket, and its close() would not see the server's
                # close frame: it would wait out its close timeout (10 s).
                client = await Client.open(self.ws_url, open_timeout=RECV_S, max_queue=None)
                await self._enter(client, g)
                failures = 0
                await self._send_all(client, g)
            except (ConnectionClosed, OSError, TimeoutError, Refused):
                g.reconnects += 1
                failures += 1
                # Bounded exponential back-off with jitter from the seeded source.
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)) * self.rng.random())
            finally:
                if client is not None:
                    await client.close()

    async def _enter(self, client: Client, g: Gifter) -> None:
        for frame, result in (
            ({"t": "auth", "token": g.user.token}, "welcome"),
            ({"t": "join", "room": self.room}, "joined"),
        ):
            answer = await client.request(frame, result)
            if answer["t"] != result:
                raise Refused(str(answer))

    async def _send_all(self, client: Client, g: Gifter) -> None:
        # Every gift sent before and not acked is sent again first, with its id.
        pending = deque(f"{g.tag}-{i}" for i in range(g.sent) if f"{g.tag}-{i}" not in g.acked)
        g.resent += len(pending)
        in_flight: set[str] = set()
        while True:
            while len(in_flight) < self.window:
                if pending:
                    rid = pending.popleft()
                elif g.sent < g.planned and not self.stop():
                    rid = f"{g.tag}-{g.sent}"
                    g.sent += 1
                else:
                    break
                await client.send({"t": "gift", "id": rid, "room": self.room, "gift": GIFT})
                in_flight.add(rid)
            if not in_flight:
                return
            frame = await client.recv(RECV_S)
            answered = frame.get("id")
            if frame["t"] == "ack" and isinstance(answered, str):
                first = g.acked.setdefault(
                    answered, Ack(frame["event"], frame["coins"], time.monotonic())
                )
                if first.event != frame["event"]:
                    g.conflicts.append(f"{answered}: acked as {first.event}, then {frame['event']}")
                in_flight.discard(answered)
            elif frame["t"] == "error" and isinstance(answered, str) and answered in in_flight:
                g.errors[frame["code"]] += 1
                assert frame["code"] in RETRYABLE, f"gift {answered} refused: {frame}"
                in_flight.discard(answered)
                pending.append(answered)
                g.resent += 1
                await asyncio.sleep(0.05 + 0.1 * self.rng.random())


async def check_books(
    redis: Redis, url: str, room: str, host: User, storm: Storm
) -> dict[str, int]:
    """Every acked gift is in its viewer's ledger and the room's history exactly once, each
    viewer paid for exactly its distinct acked ids, the host got the diamonds, the audit is
    clean. Returns the counts."""
    counts = Counter[str]()
    acked_events: list[str] = []
    for g in storm.gifters:
        assert not g.conflicts, g.conflicts
        events = [a.event for a in g.acked.values()]
        ledger = await ledger_gifts(redis, g.user)
        missing = set(events) - set(ledger)
        assert not missing, f"{g.tag}: {len(missing)} acked gifts not in the ledger"
        assert len(ledger) == len(set(ledger)) == len(events), f"{g.tag}: charged twice"
        coins = int((await read_hash(redis, keys.account(g.user.user)))[b"coins"])
        assert coins == COINS - len(g.acked) * PRICE, g.tag
        acked_events += events
        counts["resent"] += g.resent
        counts["reconnects"] += g.reconnects
        for code, n in g.errors.items():
            counts[f"errors_{code}"] += n
    seen = await history(redis, room)
    for event in acked_events:
        assert seen[("gift", event)] == 1 and seen[("credit", event)] == 1, event
    assert sum(seen.values()) == 2 * len(acked_events), "the history has gifts never acked"
    diamonds = int((await read_hash(redis, keys.room(room)))[b"diamonds"])
    assert diamonds == len(acked_events) * PRICE
    exit_code, report = await audit(url)
    assert exit_code == 0 and "audit clean" in report and "in flight 0" in report, report
    counts["acked"] = len(acked_events)
    return dict(counts)


# -- members that read ------------------------------------------------------------------------


class Reader:
    """A member that reads everything, noting when each gift and credit arrives."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.bytes = 0
        self.credits: dict[str, float] = {}
        self.gifts: Counter[str] = Counter()
        self.duplicates: list[str] = []
        self.frames: list[Frame] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await self.client.ws.recv()
                self.bytes += len(data)
                frame = msgpack.unpackb(data, raw=False)
                for f in frame["frames"] if frame["t"] == "batch" else [frame]:
                    self.frames.append(f)
                    if f["t"] == "credit":
                        if f["event"] in self.credits:
                            self.duplicates.append(f["event"])
                        self.credits.setdefault(f["event"], time.monotonic())
                    elif f["t"] == "gift" and not (f.get("streak") or {}).get("end"):
                        self.gifts[f["event"]] += 1

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.close()


async def joined_client(server: ServerProcess, user: User, room: str) -> Client:
    client = await Client.open(server.ws_url, max_queue=None)
    await client.auth(user)
    await client.join(room)
    return client
