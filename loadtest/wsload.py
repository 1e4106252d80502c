"""The WebSocket load of one process: viewers that count frames, senders that tap gifts and time
their answers, hosts that time their credits.

Modes: `service` speaks protocol v1 (auth, join, gift → ack); `echo` and `broadcast` are the bare
baseline servers (no auth or join; a gift's answer is its own frame coming back, matched by `id`
like an ack). The generator is the same in all three, so their figures compare.
"""

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from loadtest.procs import Link
from loadtest.tally import Tally
from loadtest.wsclient import HandshakeError, WsClient, connect

SUBPROTOCOL = "giftstream.v1+msgpack"
# The protocol's bound on gifts in flight per connection.
MAX_IN_FLIGHT = 64
PACE_TICK_S = 0.002
REPORT_S = 0.25
CLOSE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class ConnPlan:
    role: str  # "viewer" | "sender" | "host"
    room: str
    user: str = ""
    token: str = ""


@dataclass(frozen=True)
class WsPlan:
    index: int
    host: str
    port: int
    mode: str  # "service" | "echo" | "broadcast"
    conns: tuple[ConnPlan, ...]
    duration_s: float
    # Gifts per second from this process, open loop; 0: each sender keeps `window` in flight.
    rate: float
    window: int
    gift: str
    gift_coins: int
    run_tag: str
    drain_s: float = 10.0
    connect_concurrency: int = 100
    timeout_s: float = 30.0

    def path(self, room: str) -> str:
        if self.mode == "service":
            return "/v1/ws"
        return f"/{room}" if self.mode == "broadcast" else "/"

    async def run(self, link: Link) -> Tally:
        return await WsLoad(self, link).run()


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Run:
    """State the senders share: whether to send more, when the window ends, and how many gifts
    await an answer (`drained` is set once none does after the window)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.running = False
        self.ends = 0.0
        self.in_flight = 0
        self.drained = asyncio.Event()

    def stop(self) -> None:
        self.running = False
        if self.in_flight == 0:
            self.drained.set()


class Sender:
    def __init__(self, client: WsClient, conn: ConnPlan, plan: WsPlan, run: Run, n: int) -> None:
        self.client = client
        self.user = conn.user
        self.run = run
        self.closed_loop = plan.rate <= 0
        self.coins = plan.gift_coins
        self.prefix = f"{plan.run_tag}-{plan.index}-{n}-"
        self.frame: dict[str, Any] = {"t": "gift", "id": "", "room": conn.room, "gift": plan.gift}
        self.pending: dict[str, float] = {}
        self.backlog: deque[float] = deque()
        self.seq = 0
        self.room_frames = 0

    def submit(self, scheduled: float) -> None:
        """Open loop: send now if the connection has room in flight, else as soon as it does;
        the latency counts from `scheduled` either way."""
        if len(self.pending) < MAX_IN_FLIGHT:
            self.fire(scheduled)
        else:
            self.backlog.append(scheduled)

    def fire(self, started: float) -> None:
        self.seq += 1
        rid = self.prefix + str(self.seq)
        self.frame["id"] = rid
        self.pending[rid] = started
        self.run.in_flight += 1
        self.client.send(msgpack.packb(self.frame))
        self.run.tally.counts["gifts_sent"] += 1

    def on_message(self, data: bytes) -> None:
        frame = msgpack.unpackb(data)
        started = self.pending.pop(frame.get("id"), None)
        if started is None:
            self.room_frames += 1
            return
        now = time.perf_counter()
        self.run.in_flight -= 1
        tally = self.run.tally
        if frame.get("t") == "error":
            tally.errors[str(frame.get("code"))] += 1
        else:
            tally.counts["gifts_acked"] += 1
            if now <= self.run.ends:
                tally.counts["gifts_acked_in_window"] += 1
            tally.sample("ack", now - started)
            tally.spent[self.user] += self.coins
            event = frame.get("event")
            if event is not None:
                tally.sent_at[event] = started
        if self.run.running:
            if self.closed_loop:
                self.fire(now)
            elif self.backlog:
                self.fire(self.backlog.popleft())
        elif self.run.in_flight == 0:
            self.run.drained.set()


class HostWatch:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.credits = 0

    def on_message(self, data: bytes) -> None:
        frame = msgpack.unpackb(data)
        if frame.get("t") == "credit":
            self.credits += 1
            self.tally.credited_at[frame["event"]] = time.perf_counter()


class Entry:
    """The first frame of a wanted type, during a connection's set-up."""

    def __init__(self, wanted: tuple[str, ...]) -> None:
        self.wanted = wanted
        self.answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_message(self, data: bytes) -> None:
        frame = msgpack.unpackb(data)
        if frame.get("t") in self.wanted and not self.answer.done():
            self.answer.set_result(frame)


async def request(
    client: WsClient, frame: dict[str, Any], reply: str, timeout_s: float
) -> dict[str, Any]:
    entry = Entry((reply, "error"))
    client.on_message = entry.on_message
    client.send(msgpack.packb(frame))
    answer = await asyncio.wait_for(entry.answer, timeout_s)
    client.on_message = None
    if answer["t"] == "error":
        raise Refused(str(answer.get("code")))
    return answer


class WsLoad:
    def __init__(self, plan: WsPlan, link: Link) -> None:
        self.plan = plan
        self.link = link
        self.tally = Tally()
        self.run_state = Run(self.tally)
        self.clients: list[tuple[ConnPlan, WsClient]] = []
        self.senders: list[Sender] = []
        self.hosts: list[HostWatch] = []

    async def run(self) -> Tally:
        plan = self.plan
        await self._connect_all()
        self._assign_roles()
        self.link.report({"connected": len(self.clients)})
        self.link.ready()
        await self.link.wait_go()
        frames_before = self._frames()
        cpu_before = time.process_time()
        started = time.perf_counter()
        self.run_state.ends = started + plan.duration_s
        self.run_state.running = True
        reporter = asyncio.create_task(self._report_forever(frames_before))
        pacer = None
        if plan.rate > 0 and self.senders:
            pacer = asyncio.create_task(self._pace(started))
        else:
            for sender in self.senders:
                for _ in range(plan.window):
                    sender.fire(started)
        await asyncio.sleep(max(0.0, self.run_state.ends - time.perf_counter()))
        self.run_state.stop()
        if pacer is not None:
            pacer.cancel()
        self.tally.window_s = time.perf_counter() - started
        self.tally.cpu_s = time.process_time() - cpu_before
        self.tally.counts["frames_delivered"] = self._frames() - frames_before
        await self._drain()
        # The parent compares the counters once all have drained: they must be complete.
        self._report(frames_before)
        self.link.drained()
        await self.link.wait_finish()
        reporter.cancel()
        await self._close_all()
        return self.tally

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(self.plan.connect_concurrency)

        async def open_one(conn: ConnPlan) -> None:
            async with gate:
                try:
                    client = await self._open(conn)
                except Refused as e:
                    self.tally.errors[f"connect:{e.code}"] += 1
                    return
                except (OSError, TimeoutError, HandshakeError) as e:
                    self.tally.errors[f"connect:{type(e).__name__}"] += 1
                    return
            self.clients.append((conn, client))
            self.link.report({"connected": len(self.clients)})

        await asyncio.gather(*(open_one(conn) for conn in self.plan.conns))
        self.tally.connections = len(self.clients)
        self.tally.members = len(self.clients)

    async def _open(self, conn: ConnPlan) -> WsClient:
        plan = self.plan
        client = await connect(
            plan.host, plan.port, plan.path(conn.room), SUBPROTOCOL, plan.timeout_s
        )
        if plan.mode == "service":
            try:
                await request(client, {"t": "auth", "token": conn.token}, "welcome", plan.timeout_s)
                await request(client, {"t": "join", "room": conn.room}, "joined", plan.timeout_s)
            except BaseException:
                client.close()
                raise
        return client

    def _assign_roles(self) -> None:
        for conn, client in self.clients:
            if conn.role == "sender":
                sender = Sender(client, conn, self.plan, self.run_state, len(self.senders))
                client.on_message = sender.on_message
                self.senders.append(sender)
            elif conn.role == "host" and self.plan.mode == "service":
                host = HostWatch(self.tally)
                client.on_message = host.on_message
                self.hosts.append(host)

    def _frames(self) -> int:
        """Room frames received so far: everything but the answers to a sender's own gifts."""
        total = sum(s.room_frames for s in self.senders)
        for conn, client in self.clients:
            if conn.role != "sender":
                total += client.frames
        return total

    async def _pace(self, started: float) -> None:
        """Open loop: gift n is due at started + n / rate, spread over the senders in turn."""
        rate = self.plan.rate
        senders = self.senders
        n = 0
        while self.run_state.running:
            # Gifts 0 .. due-1 are due: gift n once n / rate seconds have passed.
            due = int((time.perf_counter() - started) * rate) + 1
            while n < due:
                senders[n % len(senders)].submit(started + n / rate)
                n += 1
            await asyncio.sleep(PACE_TICK_S)

    def _report(self, frames_before: int) -> None:
        self.link.report(
            {
                "connected": len(self.clients),
                "sent": self.tally.counts["gifts_sent"],
                "acked": self.tally.counts["gifts_acked"],
                "errors": sum(self.tally.errors.values()),
                "frames": self._frames() - frames_before,
                "credits": sum(h.credits for h in self.hosts),
            }
        )

    async def _report_forever(self, frames_before: int) -> None:
        while True:
            self._report(frames_before)
            await asyncio.sleep(REPORT_S)

    async def _drain(self) -> None:
        """Wait (bounded) for the answers to every gift sent."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.run_state.drained.wait(), self.plan.drain_s)
        for sender in self.senders:
            self.tally.counts["gifts_backlogged"] += len(sender.backlog)
            if sender.pending:
                self.tally.errors["unanswered"] += len(sender.pending)
                self.tally.uncertain[sender.user] += len(sender.pending) * sender.coins

    async def _close_all(self) -> None:
        for _, client in self.clients:
            if client.closed.done():
                self.tally.errors[f"closed_by_server:{client.closed.result()}"] += 1
            client.close()
        waits = [client.closed for _, client in self.clients]
        if waits:
            await asyncio.wait(waits, timeout=CLOSE_WAIT_S)
