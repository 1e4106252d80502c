"""The WebSocket load of one process: viewers that count frames, senders that tap gifts and time
their answers, hosts that time their credits.

Modes: `service` speaks protocol v1 (auth, join, gift → ack); `echo` and `broadcast` are the bare
baseline servers (no auth or join; a gift's answer is its own frame coming back, matched by `id`
like an ack). Viewers and hosts are the minimal client of `wsclient.py` in all three, so that a
thousand viewers cost little; the senders to the service are `giftstream_client.Client`, as a
program sends gifts (one `send_gift` per gift, with its idempotency id and its retries), and the
senders to the bare servers, which speak no protocol, the minimal client. Latency, errors and
acks are counted alike for both kinds of sender (`Sender`).

The senders are senders.py's, the viewers and hosts members.py's; this module plans and runs
them.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass

from giftstream_client import Client, ClientError, ServerError
from loadtest.members import SUBPROTOCOL, Member, Refused
from loadtest.procs import Link
from loadtest.senders import ClientSender, HostWatch, Run, Sender, WireSender
from loadtest.tally import Tally
from loadtest.wsclient import HandshakeError, WsClient, connect

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
        return total + sum(m.gift_frames for m in self.members)

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
