"""The WebSocket load of one process: viewers that count frames, senders that tap gifts and time
their answers, hosts that time their credits.

Modes: `service` speaks protocol v1 (auth, join, gift → ack); `echo` and `broadcast` are the bare
baseline servers (no auth or join; a gift's answer is its own frame coming back, matched by `id`
like an ack). Viewers and hosts are the minimal client of `wsclient.py` in all three, so that a
thousand viewers cost little; the senders to the service are `giftstream_client.Client`, as a
program sends gifts (one `send_gift` per gift, with its idempotency id and its retries), and the
senders to the bare servers, which speak no protocol, the minimal client. Latency, errors and
acks are counted alike for both kinds of sender (`Sender`).
"""

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from giftstream_client import Client, ClientClosed, ClientError, ServerError
from loadtest.procs import Link
from loadtest.tally import Tally
from loadtest.wsclient import HandshakeError, OnMessage, WsClient, connect

SUBPROTOCOL = "giftstream.v1+msgpack"
# The protocol's bound on gifts in flight per connection.
MAX_IN_FLIGHT = 64
PACE_TICK_S = 0.002
# Waits before each attempt to reconnect a viewer or host: quick, then every second.
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)
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
    """One connection that taps gifts and times their answers: at most `MAX_IN_FLIGHT` await an
    answer, the rest wait in `backlog` (open loop) with the time they were due. The latency of
    an answer counts from then, or from when it was sent (closed loop: each answer sends the
    next gift at once)."""

    def __init__(self, conn: ConnPlan, plan: WsPlan, run: Run, n: int) -> None:
        self.user = conn.user
        self.room = conn.room
        self.gift = plan.gift
        self.run = run
        self.closed_loop = plan.rate <= 0
        self.coins = plan.gift_coins
        self.prefix = f"{plan.run_tag}-{plan.index}-{n}-"
        self.pending: dict[str, float] = {}
        self.backlog: deque[float] = deque()
        self.seq = 0

    @property
    def room_frames(self) -> int:
        """Frames received that answer none of this sender's gifts."""
        raise NotImplementedError

    @property
    def gift_frames(self) -> int:
        """The room's `gift` frames received that are a gift (not a streak's closing frame)."""
        raise NotImplementedError

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
        self.pending[rid] = started
        self.run.in_flight += 1
        self.send(rid)
        self.run.tally.counts["gifts_sent"] += 1

    def send(self, rid: str) -> None:
        raise NotImplementedError

    def answered(self, rid: str, error: str | None, event: str | None) -> None:
        """The answer to gift `rid`: an error code, or the ack's gift event."""
        started = self.pending.pop(rid, None)
        if started is None:
            return
        now = time.perf_counter()
        self.run.in_flight -= 1
        tally = self.run.tally
        if error is not None:
            tally.errors[error] += 1
        else:
            tally.counts["gifts_acked"] += 1
            if now <= self.run.ends:
                tally.counts["gifts_acked_in_window"] += 1
            tally.sample("ack", now - started)
            tally.spent[self.user] += self.coins
            if event is not None:
                tally.sent_at[event] = started
        if self.run.running:
            if self.closed_loop:
                self.fire(now)
            elif self.backlog:
                self.fire(self.backlog.popleft())
        elif self.run.in_flight == 0:
            self.run.drained.set()

    async def close(self) -> None:
        raise NotImplementedError


class ClientSender(Sender):
    """A sender of protocol v1 through `giftstream_client.Client`, as a program would send
    gifts: each gift is one `send_gift` with its idempotency id, re-sent with that id after a
    reconnect until it is answered. The client keeps no events and does not ask for the
    extension frames (`receive_events=False`), so the server sends it what it sends a minimal
    client."""

    def __init__(self, client: Client, conn: ConnPlan, plan: WsPlan, run: Run, n: int) -> None:
        super().__init__(conn, plan, run, n)
        self.client = client
        self.tasks: set[asyncio.Task[None]] = set()
        self.answers = 0
        # The answers to auth and join.
        self.set_up = client.messages_received
        self.welcome = client.welcome

    @property
    def room_frames(self) -> int:
        return self.client.messages_received - self.set_up - self.answers

    @property
    def gift_frames(self) -> int:
        return self.client.gift_frames_received

    @property
    def reconnected(self) -> bool:
        """Each (re)connection authenticates again, with a new `welcome`."""
        return self.client.welcome is not self.welcome

    def send(self, rid: str) -> None:
        task = asyncio.create_task(self._send(rid))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, rid: str) -> None:
        try:
            ack = await self.client.send_gift(self.room, self.gift, id=rid)
        except ServerError as e:
            self.answers += 1
            self.answered(rid, e.code, None)
        except ClientClosed:
            return  # closed after the drain: counted as unanswered there
        except ClientError as e:
            self.answered(rid, type(e).__name__, None)
        else:
            self.answers += 1
            self.answered(rid, None, ack.event)

    async def close(self) -> None:
        await self.client.close()


class WireSender(Sender):
    """A sender on the minimal client, for the bare baseline servers (no auth, no join: the
    answer to a gift is its own frame coming back, matched by `id`)."""

    def __init__(self, client: WsClient, conn: ConnPlan, plan: WsPlan, run: Run, n: int) -> None:
        super().__init__(conn, plan, run, n)
        self.client = client
        self.frame: dict[str, Any] = {"t": "gift", "id": "", "room": conn.room, "gift": plan.gift}
        self.frames = 0
        self.gifts_seen = 0
        client.on_message = self.on_message

    @property
    def room_frames(self) -> int:
        return self.frames

    @property
    def gift_frames(self) -> int:
        return self.gifts_seen

    def send(self, rid: str) -> None:
        self.frame["id"] = rid
        self.client.send(msgpack.packb(self.frame))

    def on_message(self, data: bytes) -> None:
        frame = msgpack.unpackb(data)
        rid = frame.get("id")
        if rid not in self.pending:
            self.frames += 1
            self.gifts_seen += frame.get("t") == "gift" and not (frame.get("streak") or {}).get(
                "end"
            )
            return
        error = str(frame.get("code")) if frame.get("t") == "error" else None
        self.answered(rid, error, frame.get("event"))

    async def close(self) -> None:
        self.client.close()


class HostWatch:
    """A host's credits: each event once (a second credit frame of an event is counted as
    doubled: resuming by offset must never deliver one twice)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.credits = 0

    def on_message(self, data: bytes) -> None:
        frame = msgpack.unpackb(data)
        for f in frame["frames"] if frame.get("t") == "batch" else [frame]:
            if f.get("t") != "credit":
                continue
            if f["event"] in self.tally.credited_at:
                self.tally.counts["credits_doubled"] += 1
                continue
            self.credits += 1
            self.tally.credited_at[f["event"]] = time.perf_counter()


class Member:
    """A viewer or a host of the service on the minimal client: when the server drops its
    connection (a worker killed, a slow consumer closed) it connects again, with a bounded
    backoff, and joins with `since` = the last offset it saw, so the room's history fills the
    gap once. Only the last message is kept (not decoded) for its offset: a thousand viewers
    stay cheap."""

    def __init__(self, conn: ConnPlan, plan: "WsPlan", tally: Tally) -> None:
        self.conn = conn
        self.plan = plan
        self.tally = tally
        self.client: WsClient | None = None
        self.on_message: OnMessage | None = None
        self.epoch: str | None = None
        self.offset = 0
        self._last: bytes | None = None
        self._frames_before = 0  # frames of the connections before this one
        self._stopped = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def frames(self) -> int:
        return self._frames_before + (self.client.frames if self.client is not None else 0)

    async def open(self) -> None:
        self.client = await self._connect()
        self._watch = asyncio.create_task(self._reconnect_forever())

    async def _connect(self) -> WsClient:
        plan = self.plan
        client = await connect(
            plan.host, plan.port, plan.path(self.conn.room), SUBPROTOCOL, plan.timeout_s
        )
        try:
            await request(
                client, {"t": "auth", "token": self.conn.token}, "welcome", plan.timeout_s
            )
            join: dict[str, Any] = {"t": "join", "room": self.conn.room}
            if self.epoch is not None:
                join["since"] = {"epoch": self.epoch, "offset": self.offset}
            joined = await request(client, join, "joined", plan.timeout_s)
        except BaseException:
            client.close()
            raise
        if self.epoch is None:
            self.offset = int(joined["offset"])
        elif joined["epoch"] != self.epoch:
            self.offset = 0
        self.epoch = str(joined["epoch"])
        client.on_message = self._on_message
        return client

    def _on_message(self, data: bytes) -> None:
        self._last = data
        if self.on_message is not None:
            self.on_message(data)

    def _note_offset(self) -> None:
        """The offset of the last message, if it has one (room events do)."""
        if self._last is None:
            return
        frame = msgpack.unpackb(self._last)
        frames = frame["frames"] if frame.get("t") == "batch" else [frame]
        for f in frames:
            if isinstance(f.get("offset"), int):
                self.offset = max(self.offset, f["offset"])

    async def _reconnect_forever(self) -> None:
        delays = RECONNECT_DELAYS_S
        while True:
            assert self.client is not None
            code = await self.client.closed
            if self._stopped:
                return
            self.tally.errors[f"closed_by_server:{code}"] += 1
            self.tally.counts["reconnects"] += 1
            self._note_offset()
            self._frames_before += self.client.frames
            self.client = None
            for attempt in itertools.count():
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
                if self._stopped:
                    return
                try:
                    self.client = await self._connect()
                    break
                except (OSError, TimeoutError, HandshakeError, Refused):
                    continue

    def close(self) -> asyncio.Future[int] | None:
        """Close for good; the connection's `closed`, to wait on (None when there is none)."""
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
        if self.client is None:
            return None
        self.client.close()
        return self.client.closed


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
        # The minimal clients: viewers and hosts of a bare server, and its senders.
        self.clients: list[tuple[ConnPlan, WsClient]] = []
        # The service's viewers and hosts (minimal clients that reconnect and resume).
        self.members: list[Member] = []
        self.senders: list[Sender] = []
        self.hosts: list[HostWatch] = []

    @property
    def connected(self) -> int:
        clients = len(self.clients) + len(self.members)
        return clients + sum(isinstance(s, ClientSender) for s in self.senders)

    async def run(self) -> Tally:
        plan = self.plan
        await self._connect_all()
        self.link.report({"connected": self.connected})
        self.link.ready()
        await self.link.wait_go()
        frames_before = self._frames()
        gift_frames_before = self._gift_frames()
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
        self.tally.counts["gift_frames_delivered"] = self._gift_frames() - gift_frames_before
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

        async def open_one(n: int, conn: ConnPlan) -> None:
            async with gate:
                try:
                    if conn.role == "sender" and self.plan.mode == "service":
                        client = await self._open_client(conn)
                        self.senders.append(
                            ClientSender(client, conn, self.plan, self.run_state, n)
                        )
                    elif self.plan.mode == "service":
                        member = Member(conn, self.plan, self.tally)
                        await member.open()
                        self._add_member(member)
                    else:
                        self._assign(conn, await self._open(conn), n)
                except Refused as e:
                    self.tally.errors[f"connect:{e.code}"] += 1
                    return
                except (OSError, TimeoutError, HandshakeError, ClientError) as e:
                    self.tally.errors[f"connect:{type(e).__name__}"] += 1
                    return
            self.link.report({"connected": self.connected})

        await asyncio.gather(*(open_one(n, c) for n, c in enumerate(self.plan.conns)))
        self.tally.connections = self.connected
        self.tally.members = self.connected

    async def _open(self, conn: ConnPlan) -> WsClient:
        plan = self.plan
        return await connect(
            plan.host, plan.port, plan.path(conn.room), SUBPROTOCOL, plan.timeout_s
        )

    async def _open_client(self, conn: ConnPlan) -> Client:
        plan = self.plan
        url = f"ws://{plan.host}:{plan.port}{plan.path(conn.room)}"
        client = Client(url, conn.token, receive_events=False, open_timeout_s=plan.timeout_s)
        try:
            await client.connect()
            await client.join(conn.room)
        except ServerError as e:
            await client.close()
            raise Refused(e.code) from e
        except BaseException:
            await client.close()
            raise
        return client

    def _assign(self, conn: ConnPlan, client: WsClient, n: int) -> None:
        self.clients.append((conn, client))
        if conn.role == "sender":
            self.senders.append(WireSender(client, conn, self.plan, self.run_state, n))

    def _add_member(self, member: Member) -> None:
        self.members.append(member)
        if member.conn.role == "host":
            host = HostWatch(self.tally)
            member.on_message = host.on_message
            self.hosts.append(host)

    def _gift_frames(self) -> int:
        """The room's gift frames received so far, one per gift per member unless merged."""
        total = sum(s.gift_frames for s in self.senders)
        for conn, client in self.clients:
            if conn.role != "sender":
                total += client.gift_frames
        return total

    def _frames(self) -> int:
        """Room frames received so far: everything but the answers to a sender's own gifts."""
        total = sum(s.room_frames for s in self.senders)
        for conn, client in self.clients:
            if conn.role != "sender":
                total += client.frames
        return total + sum(m.frames for m in self.members)

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
                "connected": self.connected,
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
        for sender in self.senders:
            if isinstance(sender, ClientSender):
                # The server closed its connection at least once; the client reconnected and
                # re-sent what was unanswered.
                if sender.reconnected:
                    self.tally.errors["closed_by_server:sender"] += 1
                await sender.close()
        for _, client in self.clients:
            if client.closed.done():
                self.tally.errors[f"closed_by_server:{client.closed.result()}"] += 1
            client.close()
        waits = [client.closed for _, client in self.clients]
        for member in self.members:
            closing = member.close()
            if closing is not None:
                waits.append(closing)
        if waits:
            await asyncio.wait(waits, timeout=CLOSE_WAIT_S)
