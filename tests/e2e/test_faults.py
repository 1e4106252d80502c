"""Faults during gifting, each injected from a fixed seed so that a failure replays: a worker
killed mid-storm, the store killed and restarted (AOF `always`, then `everysec`), clients that
never read, and a silent loss of the pub/sub connection.

The gifting clients behave as a correct client must: they match acks by `id`, and on a lost
connection or a retryable answer (`unavailable`, `internal`, `rate_limited`) they reconnect and
re-send every gift not yet acked, with the same `id`. Afterwards the store is checked: no acked
gift is lost, none is charged twice, and `giftstream audit` is clean.

Each test writes its figures to a JSON file in its tmp dir and prints one line (`pytest -s`).
"""

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from giftstream.store import keys
from giftstream.store.connection import Redis, command, read_hash, read_stream
from giftstream.store.embedded import EmbeddedValkey
from giftstream.wire.codec import MSGPACK_SUBPROTOCOL
from proxy import Forwarder, Pair
from support import (
    Api,
    Client,
    Frame,
    ServerProcess,
    User,
    audit,
    crash,
    eventually,
    metric,
    serving,
    settles,
    store,
)

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
# Valkey's everysec policy: an fsync each second, postponed up to one more second while the
# previous one runs: the writes of the last 2 s before a crash are at risk.
EVERYSEC_LOSS_WINDOW_S = 2.0


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
    entries = await read_stream(redis, keys.room_events(room))
    frames = [msgpack.unpackb(e[b"f"], raw=False) for _, e in entries]
    return Counter((f["t"], f["event"]) for f in frames)


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


# -- (a) a worker killed during a storm ------------------------------------------------------


def worker_pids(server: ServerProcess) -> list[int]:
    """The uvicorn worker processes of `serve --workers N` (children of the server process)."""
    assert server.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.process.pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def connections_by_worker(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections on `port` each worker holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01" and int(parts[1].split(":")[1], 16) == port:
            inodes.add(parts[9])
    counts = {}
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    held += target.startswith("socket:[") and target[8:-1] in inodes
        counts[pid] = held
    return counts


WORKER_KILL_VIEWERS = 6
WORKER_KILL_GIFTS = 150  # per viewer


async def test_killing_one_of_two_workers_mid_storm_loses_no_acked_gift_and_charges_none_twice(
    fresh_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    url = fresh_valkey.url
    server = ServerProcess(url, env=STORM_ENV, workers=2)
    async with serving(server) as (server, api), store(url) as redis:
        host, room, viewers = await scene(api, WORKER_KILL_VIEWERS)
        gifters = [Gifter(v, f"w{i}", WORKER_KILL_GIFTS) for i, v in enumerate(viewers)]
        storm = Storm(server.ws_url, room, gifters, rng)
        running = asyncio.create_task(storm.run())
        try:
            await eventually(lambda: storm.acked >= storm.planned // 4, STORM_S, "a quarter acked")
            workers = await asyncio.to_thread(worker_pids, server)
            assert len(workers) == 2, workers
            held = await asyncio.to_thread(connections_by_worker, server.port, workers)
            # The worker holding the most connections (ties broken by the seeded source).
            victim = max(workers, key=lambda pid: (held[pid], rng.random()))
            acked_at_kill = storm.acked
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            await asyncio.wait_for(running, STORM_S)
            storm_end = time.monotonic()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        reconnects = sum(g.reconnects for g in gifters)
        assert reconnects >= 1, "the kill cut the connections of the killed worker's clients"
        assert all(len(g.acked) == g.planned for g in gifters), "every gift acked in the end"
        await eventually(lambda: outboxes_empty(redis, viewers), 30, "every debit credited")
        counts = await check_books(redis, url, room, host, storm)

        async def replaced() -> bool:
            pids = await asyncio.to_thread(worker_pids, server)
            return len(pids) == 2 and victim not in pids

        await eventually(replaced, 30, "uvicorn starts a worker in place of the killed one")
    record(
        tmp_path,
        "worker-kill",
        {
            "seed": SEED,
            "gifts": storm.planned,
            "acked_at_kill": acked_at_kill,
            "connections_cut": held[victim],
            "seconds_to_kill": round(killed_at - storm.started, 1),
            "seconds_after_kill": round(storm_end - killed_at, 1),
            **counts,
            # As check_books asserted:
            "acked_gifts_lost": 0,
            "charged_twice": 0,
        },
    )


# -- (b, c) the store killed and restarted ---------------------------------------------------


STORE_KILL_VIEWERS = 4
STORE_KILL_GIFTS = 150  # per viewer
# With everysec, a longer storm killed once it has run for EVERYSEC_KILL_AFTER_S and acked half
# its gifts: most of the gifts acked before the crash are older than the loss window.
EVERYSEC_GIFTS = 1_000  # per viewer
EVERYSEC_KILL_AFTER_S = 3.0


async def waitaof(url: str) -> None:
    """Block until every write so far is fsynced to the AOF (the scene, before the storm)."""
    async with store(url) as redis:
        local, _ = await command(redis, "WAITAOF", 1, 0, 5000)
    assert local == 1


@dataclass
class StoreCrash:
    storm: Storm
    killed_at: float
    acked_at_kill: int
    acked_before_restart: dict[str, Ack]
    lost: list[str]
    not_ready_s: float
    ready_again_s: float
    counts: dict[str, int]


async def crash_the_store(
    data_dir: Path, aof_fsync: str, seed: int, gifts: int, kill_when: Callable[[Storm], bool]
) -> StoreCrash:
    """A storm through a server on an embedded Valkey that is killed (kill -9) mid-storm, when
    `kill_when` holds, and restarted on the same data directory; the server is left to recover
    by itself."""
    rng = random.Random(seed)
    with own_valkey(data_dir, aof_fsync) as valkey:
        url = valkey.url
        async with serving(ServerProcess(url, env=STORM_ENV)) as (server, api):
            host, room, viewers = await scene(api, STORE_KILL_VIEWERS)
            await waitaof(url)
            gifters = [Gifter(v, f"s{i}", gifts) for i, v in enumerate(viewers)]
            storm = Storm(server.ws_url, room, gifters, rng)
            running = asyncio.create_task(storm.run())
            try:
                await eventually(lambda: kill_when(storm), STORM_S, "the moment to kill")
                acked_at_kill = storm.acked
                killed_at = time.monotonic()
                await asyncio.to_thread(crash, valkey)
                # The server notices by itself...
                not_ready_s = await eventually(lambda: not_ready(api), READY_S, "/readyz fails")
                acked_before_restart = storm.acks()
                await asyncio.to_thread(valkey.start)
                # ...and recovers by itself.
                ready_again_s = await eventually(lambda: ready(api), READY_S, "/readyz is back")
                await asyncio.wait_for(running, STORM_S)
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            assert all(len(g.acked) == g.planned for g in gifters), "every gift acked in the end"
            # New gifts work after the recovery, from a new connection too.
            late = await Client.open(server.ws_url, max_queue=None)
            try:
                await late.auth(viewers[0])
                await late.join(room)
                ack = await late.gift(room, GIFT, "after-the-restart")
                assert ack["t"] == "ack", ack
            finally:
                await late.close()
            gifters[0].acked["after-the-restart"] = Ack(
                ack["event"], ack["coins"], time.monotonic()
            )
            async with store(url) as redis:
                ledgers = set()
                for g in gifters:
                    ledgers.update(await ledger_gifts(redis, g.user))
                lost = sorted(set(acked_before_restart) - ledgers)
                counts: dict[str, int] = {}
                await eventually(lambda: outboxes_empty(redis, viewers), 30, "every debit credited")
                if not lost:
                    counts = await check_books(redis, url, room, host, storm)
                else:  # the books must still balance, without the lost gifts
                    code, report = await audit(url)
                    assert code == 0 and "audit clean" in report, report
    return StoreCrash(
        storm,
        killed_at,
        acked_at_kill,
        acked_before_restart,
        lost,
        not_ready_s,
        ready_again_s,
        counts,
    )


async def test_valkey_killed_mid_storm_with_fsync_always_loses_no_acked_gift_and_recovers(
    short_tmp: Path, tmp_path: Path
) -> None:
    run = await crash_the_store(
        short_tmp / "data",
        "always",
        SEED,
        STORE_KILL_GIFTS,
        lambda storm: storm.acked >= storm.planned * 3 // 10,
    )
    record(
        tmp_path,
        "valkey-kill-always",
        {
            "seed": SEED,
            "gifts": run.storm.planned,
            "acked_at_kill": run.acked_at_kill,
            "acked_before_restart": len(run.acked_before_restart),
            "acked_gifts_lost": len(run.lost),
            "seconds_to_not_ready": round(run.not_ready_s, 2),
            "seconds_to_ready_again": round(run.ready_again_s, 2),
            **run.counts,
        },
    )
    assert run.lost == [], f"{len(run.lost)} acked gifts lost with appendfsync always"
    assert run.counts["acked"] == run.storm.planned + 1


async def test_valkey_killed_mid_storm_with_fsync_everysec_loses_at_most_the_acks_of_its_last_2_s(
    short_tmp: Path, tmp_path: Path
) -> None:
    run = await crash_the_store(
        short_tmp / "data",
        "everysec",
        SEED + 1,
        EVERYSEC_GIFTS,
        lambda storm: (
            time.monotonic() - storm.started >= EVERYSEC_KILL_AFTER_S
            and storm.acked >= storm.planned // 2
        ),
    )
    acks = run.acked_before_restart
    window_start = run.killed_at - EVERYSEC_LOSS_WINDOW_S
    at_risk = [event for event, ack in acks.items() if ack.at >= window_start]
    record(
        tmp_path,
        "valkey-kill-everysec",
        {
            "seed": SEED + 1,
            "gifts": run.storm.planned,
            "acked_at_kill": run.acked_at_kill,
            "acked_before_restart": len(acks),
            "acked_in_the_last_2_s": len(at_risk),
            "acked_gifts_lost": len(run.lost),
            "seconds_to_not_ready": round(run.not_ready_s, 2),
            "seconds_to_ready_again": round(run.ready_again_s, 2),
            **run.counts,
        },
    )
    # Only writes of the last fsync period can be lost: acks older than it never are.
    assert set(run.lost) <= set(at_risk), "a gift acked long before the crash was lost"
    assert len(run.lost) <= len(at_risk)
    if not run.lost:
        assert run.counts["acked"] == run.storm.planned + 1


# -- (d) clients that never read -------------------------------------------------------------

# A quarter of the default: a client that does not read fills it soon, while it still holds
# the frames of one tick for a member that reads, with room to spare on a loaded machine (the
# frames of a tick go onto the queue at once; a queue that cannot take a tick's credits cuts
# even a host that reads).
SEND_QUEUE_BYTES = 262_144
# What the room sends to a member before the tests call a non-reading client's queue surely
# full: its socket buffers (kept small: see never_reading) hold about 150 KB, the server's
# transport buffer 64 KB, the queue 256 KB.
FILL_BYTES = 1_200_000
# The same for the viewers that never read, with more to spare: the kernel's buffers for a
# socket that does not read vary from run to run, and a viewer's frames are written a tick at
# a time, so a storm short of this can end before its queue is full.
VIEWER_FILL_BYTES = 4_000_000
AFTER_CUT_GIFTS = 300
# Gifts in flight per gifter: a steady room, whose frames of one tick (50 ms) are far fewer
# bytes than a queue. A queue then fills by accumulating while its client does not read, not
# by one burst.
SLOW_WINDOW = 2
# A member that reads gets each credit within this long of its ack.
LAG_BOUND_S = 2.0
# 64 four-byte characters: bigger frames, so that fewer gifts fill a queue.
BIG_NAME = "\U0001f339" * 64


@pytest.fixture(scope="module")
def queue_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    env = {**STORM_ENV, "GIFTSTREAM_SEND_QUEUE_BYTES": str(SEND_QUEUE_BYTES)}
    server = ServerProcess(valkey.url, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


async def never_reading(server: ServerProcess, user: User, room: str, extras: bool) -> Client:
    """A client that joins the room and then never reads. Its socket advertises a small
    window and segment size, so that the kernel holds little for it (a phone on a bad
    network): the server's queue for it fills after a few hundred KB, not many MB."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    ws = await ws_connect(
        server.ws_url,
        sock=sock,
        subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
        max_queue=1,
        ping_interval=None,
    )
    client = Client(ws, json_mode=False)
    await client.auth(user, extras=extras)
    await client.join(room)
    return client


async def drain(client: Client, within_s: float = 30.0) -> tuple[list[Frame], int | None]:
    """Read what a client has waiting: its frames, and the close code if the server closed it
    (None: still open, answering a ping)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + within_s
    try:
        await client.send({"t": "ping", "id": "drain"})
        while True:
            frame = await client.recv_frame(max(deadline - time.monotonic(), 0.001))
            for f in frame["frames"] if frame["t"] == "batch" else [frame]:
                frames.append(f)
                if f["t"] == "pong" and f.get("id") == "drain":
                    return frames, None
    except ConnectionClosed as e:
        return frames, e.rcvd.code if e.rcvd is not None else 1006


@dataclass
class Pace:
    """How the members that read fared while others did not read."""

    gifts: int
    missing_credits: int
    missing_gifts: int
    duplicate_credits: int
    duplicate_gifts: int
    worst_lag_s: float


async def pace_of_the_room(storm: Storm, reader: Reader, watcher: Reader) -> Pace:
    """Whether the reading host got every credit and the reading viewer every gift, once, and
    how long after its ack the slowest credit came."""
    acks = storm.acks()
    await settles(lambda: set(acks) <= set(reader.credits) and set(acks) <= set(watcher.gifts), 10)
    lags = [reader.credits[e] - a.at for e, a in acks.items() if e in reader.credits]
    return Pace(
        gifts=len(acks),
        missing_credits=len(set(acks) - set(reader.credits)),
        missing_gifts=len(set(acks) - set(watcher.gifts)),
        duplicate_credits=len(reader.duplicates),
        duplicate_gifts=sum(n - 1 for n in watcher.gifts.values()),
        worst_lag_s=max(lags, default=0.0),
    )


def assert_the_room_kept_pace(pace: Pace) -> None:
    assert pace.gifts > 0
    assert (pace.missing_credits, pace.missing_gifts) == (0, 0), pace
    assert (pace.duplicate_credits, pace.duplicate_gifts) == (0, 0), pace
    assert pace.worst_lag_s < LAG_BOUND_S, pace


@dataclass
class SlowHostRun:
    storm: Storm
    cut_during_storm: bool
    bytes_before_cut: int
    pace: Pace
    reader_open: bool
    close_code: int | None
    frames_read_on_drain: int


def slow_consumer_closes_of(server: ServerProcess, user: User) -> int:
    """How many connections of `user` the server has logged closing as slow consumers."""
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace")
    return text.count(f"closing a slow consumer (user {user.user},")


async def still_open(reader: Reader) -> bool:
    """Whether a reading member's connection still answers."""
    with contextlib.suppress(ConnectionClosed):
        await reader.client.send({"t": "ping", "id": "open?"})
    return await settles(lambda: any(f.get("id") == "open?" for f in reader.frames), 10)


@pytest.fixture(scope="module")
async def slow_host_run(queue_server: ServerProcess) -> SlowHostRun:
    """A busy room whose host has a second connection that never reads."""
    api = Api(queue_server.base_url)
    try:
        host, room, viewers = await scene(api, 4, BIG_NAME)
        reader = Reader(await joined_client(queue_server, host, room))
        watcher = Reader(await joined_client(queue_server, await api.user(), room))
        slow = await never_reading(queue_server, host, room, extras=False)
        # The host's connections are the reader and the one that never reads: a cut of the
        # host's that leaves the reader open is the other one's.
        closes_before = slow_consumer_closes_of(queue_server, host)
        cut: list[int] = []  # reader's bytes when the server cut the slow client
        gifters = [Gifter(v, f"h{i}", 100_000) for i, v in enumerate(viewers)]
        acked_at_cut: list[int] = []

        def enough() -> bool:
            if cut:
                return storm.acked >= acked_at_cut[0] + AFTER_CUT_GIFTS
            return reader.bytes >= FILL_BYTES

        storm = Storm(queue_server.ws_url, room, gifters, random.Random(SEED), SLOW_WINDOW, enough)

        async def watch_for_the_cut() -> None:
            while not cut:
                closes = await asyncio.to_thread(slow_consumer_closes_of, queue_server, host)
                if closes > closes_before:
                    cut.append(reader.bytes)
                    acked_at_cut.append(storm.acked)
                await asyncio.sleep(0.1)

        watching = asyncio.create_task(watch_for_the_cut())
        try:
            await asyncio.wait_for(storm.run(), STORM_S)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        pace = await pace_of_the_room(storm, reader, watcher)
        reader_open = await still_open(reader)
        frames, code = await drain(slow)
        await slow.close()
        await reader.close()
        await watcher.close()
        return SlowHostRun(
            storm, bool(cut), cut[0] if cut else -1, pace, reader_open, code, len(frames)
        )
    finally:
        await api.aclose()


async def test_a_host_connection_that_never_reads_is_cut_off_once_its_queue_is_full(
    slow_host_run: SlowHostRun, tmp_path: Path
) -> None:
    run = slow_host_run
    record(
        tmp_path,
        "slow-host",
        {
            "send_queue_bytes": SEND_QUEUE_BYTES,
            "gifts_acked": run.storm.acked,
            "cut_during_storm": run.cut_during_storm,
            "room_bytes_before_cut": run.bytes_before_cut,
            "close_code": run.close_code,
            "frames_read_on_drain": run.frames_read_on_drain,
            "worst_credit_lag_s": round(run.pace.worst_lag_s, 3),
        },
    )
    assert run.reader_open, "the host's reading connection was cut: the test cannot tell"
    assert run.cut_during_storm, (
        f"{FILL_BYTES} bytes of lossless frames sent to a connection that never reads, and no"
        f" slow-consumer close while it did not read (close seen only on reading: {run.close_code})"
    )
    # 1008 when the close frame reaches the client; a client that never reads cannot read it,
    # and sees the connection dropped (1006) once the server's close handshake times out.
    assert run.close_code in (1008, 1006)


async def test_while_a_host_connection_never_reads_the_others_get_every_frame_in_time(
    slow_host_run: SlowHostRun,
) -> None:
    assert slow_host_run.reader_open
    assert_the_room_kept_pace(slow_host_run.pace)


@dataclass
class SlowViewerRun:
    storm: Storm
    dropped: float
    slow_closes: float
    outcomes: dict[bool, tuple[int, int | None]]  # extras -> (gift frames read, close code)
    pace: Pace
    reader_open: bool


@pytest.fixture(scope="module")
async def slow_viewers_run(queue_server: ServerProcess) -> SlowViewerRun:
    """A busy room with two viewers that never read: one plain, one with `extras`."""
    api = Api(queue_server.base_url)
    try:
        host, room, viewers = await scene(api, 4, BIG_NAME)
        reader = Reader(await joined_client(queue_server, host, room))
        watcher = Reader(await joined_client(queue_server, await api.user(), room))
        slow = {
            extras: await never_reading(queue_server, await api.user(), room, extras)
            for extras in (False, True)
        }
        dropped_before = await metric(api, FRAMES_DROPPED)
        closes_before = await metric(api, SLOW_CONSUMER_CLOSES)
        gifters = [Gifter(v, f"v{i}", 100_000) for i, v in enumerate(viewers)]
        storm = Storm(
            queue_server.ws_url,
            room,
            gifters,
            random.Random(SEED),
            SLOW_WINDOW,
            lambda: watcher.bytes >= VIEWER_FILL_BYTES,
        )
        await asyncio.wait_for(storm.run(), STORM_S)
        pace = await pace_of_the_room(storm, reader, watcher)
        reader_open = await still_open(reader)
        dropped = await metric(api, FRAMES_DROPPED) - dropped_before
        slow_closes = await metric(api, SLOW_CONSUMER_CLOSES) - closes_before
        outcomes = {}
        for extras, client in slow.items():
            frames, code = await drain(client)
            outcomes[extras] = (sum(f["t"] == "gift" for f in frames), code)
            await client.close()
        await reader.close()
        await watcher.close()
        return SlowViewerRun(storm, dropped, slow_closes, outcomes, pace, reader_open)
    finally:
        await api.aclose()


@pytest.mark.parametrize("extras", [False, True], ids=["v1", "extras"])
async def test_a_viewer_that_never_reads_loses_only_animations_and_stays_connected(
    slow_viewers_run: SlowViewerRun, extras: bool, tmp_path: Path
) -> None:
    run = slow_viewers_run
    gifts_read, code = run.outcomes[extras]
    record(
        tmp_path,
        f"slow-viewer-{'extras' if extras else 'v1'}",
        {
            "send_queue_bytes": SEND_QUEUE_BYTES,
            "gifts_acked": run.storm.acked,
            "gift_frames_read": gifts_read,
            "frames_dropped": int(run.dropped),
            "slow_consumer_closes": int(run.slow_closes),
            "close_code": code,
            "worst_credit_lag_s": round(run.pace.worst_lag_s, 3),
        },
    )
    # Its queue filled: animations were dropped for it...
    assert gifts_read < run.storm.acked
    assert run.dropped > 0
    # ...and it was not cut off: gift frames are lossy, never a reason to close.
    assert code is None, f"closed with {code}"


async def test_while_viewers_never_read_the_others_get_every_frame_in_time(
    slow_viewers_run: SlowViewerRun,
) -> None:
    assert slow_viewers_run.reader_open
    assert_the_room_kept_pace(slow_viewers_run.pace)


# -- (e) the pub/sub connection lost silently ------------------------------------------------


class StoreProxy(Forwarder):
    """A unix-socket proxy in front of Valkey that can partition the pub/sub connections: their
    bytes stop flowing both ways, and neither side sees a close (as when a network drops
    packets), while the command connections go on. `heal` cuts the partitioned connections."""

    def __init__(self, target: Path, path: Path) -> None:
        super().__init__()
        self.target = target
        self.path = path
        self.partitioned = False
        self.pubsub_connections = 0
        self._pubsub: set[Pair] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> "StoreProxy":
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        return self

    def partition(self) -> None:
        self.partitioned = True

    def heal(self) -> None:
        self.partitioned = False
        for pair in list(self._pubsub & self._pairs):
            pair.cut()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.target))

    def _passes(self, pair: Pair, chunk: bytes, from_server: bool) -> bool:
        if not from_server and pair not in self._pubsub and b"SUBSCRIBE" in chunk.upper():
            self._pubsub.add(pair)
            self.pubsub_connections += 1
        # A pub/sub connection's bytes are lost in the partition.
        return not (pair in self._pubsub and self.partitioned)


OUTAGE_GIFTS = 120


async def gift_many(client: Client, room: str, ids: list[str], window: int = 8) -> dict[str, Ack]:
    """Gifts over one joined connection, `window` in flight; their acks by event."""
    acks: dict[str, Ack] = {}
    todo, in_flight = deque(ids), set[str]()
    while todo or in_flight:
        while todo and len(in_flight) < window:
            rid = todo.popleft()
            await client.send({"t": "gift", "id": rid, "room": room, "gift": GIFT})
            in_flight.add(rid)
        frame = await client.recv(RECV_S)
        if frame["t"] in ("ack", "error") and frame.get("id") in in_flight:
            assert frame["t"] == "ack", frame
            acks[frame["event"]] = Ack(frame["event"], frame["coins"], time.monotonic())
            in_flight.discard(frame["id"])
    return acks


async def test_a_silently_lost_pubsub_connection_fails_readyz_and_missed_credits_are_replayed(
    fresh_valkey: EmbeddedValkey, short_tmp: Path, tmp_path: Path
) -> None:
    socket_file = Path(fresh_valkey.url.removeprefix("unix://"))
    proxy = await StoreProxy(socket_file, short_tmp / "proxy.sock").start()
    try:
        async with serving(ServerProcess(proxy.url, env=STORM_ENV)) as (server, api):
            host, room, (viewer,) = await scene(api, 1)
            reader = Reader(await joined_client(server, host, room))
            watcher = Reader(await joined_client(server, await api.user(), room))
            gifter = await joined_client(server, viewer, room)
            before = await gift_many(gifter, room, ["p-0", "p-1", "p-2"])
            await eventually(lambda: set(before) <= set(reader.credits), 10, "live credits")

            proxy.partition()
            # Detected: /readyz fails on the pub/sub check while the store itself answers.
            detected_s = await eventually(lambda: not_ready(api), 20, "/readyz fails")
            checks = (await api.http.get("/readyz")).json()["checks"]
            missed = await gift_many(gifter, room, [f"q-{i}" for i in range(OUTAGE_GIFTS)])
            delivered_during_outage = set(missed) & set(reader.credits)
            proxy.heal()
            recovered_s = await eventually(lambda: ready(api), 30, "/readyz is back")
            after = await gift_many(gifter, room, ["r-0", "r-1", "r-2"])
            await gifter.close()

            every = set(before) | set(missed) | set(after)
            await eventually(lambda: every <= set(reader.credits), 15, "every credit at the host")
            await eventually(lambda: every <= set(watcher.gifts), 15, "every gift at the viewer")
            # Once each, in offset order, and nothing after the last one.
            await reader.client.send({"t": "ping", "id": "fence"})
            await eventually(
                lambda: any(f.get("id") == "fence" for f in reader.frames), 10, "the fence"
            )
            credits = [f for f in reader.frames if f["t"] == "credit"]
            offsets = [f["offset"] for f in credits]
            await reader.close()
            await watcher.close()
    finally:
        await proxy.close()
    record(
        tmp_path,
        "pubsub-partition",
        {
            "gifts_during_outage": len(missed),
            "seconds_to_not_ready": round(detected_s, 2),
            "readyz_checks_during_outage": checks,
            "credits_delivered_live_during_outage": len(delivered_during_outage),
            "seconds_to_ready_after_heal": round(recovered_s, 2),
            "credits_at_host": len(credits),
            "pubsub_connections_made": proxy.pubsub_connections,
        },
    )
    code, report = await audit(fresh_valkey.url)
    assert code == 0 and "audit clean" in report, report
    assert checks == {"redis": True, "pubsub": False}
    assert not delivered_during_outage, "the partition did cut the live fan-out"
    assert proxy.pubsub_connections >= 2, "the hub made a new pub/sub connection"
    assert not reader.duplicates and len(credits) == len(every)
    assert offsets == sorted(offsets)
    assert all(n == 1 for n in watcher.gifts.values())
