"""The senders of one load process: connections that tap gifts and time their answers, through
`giftstream_client.Client` (the service) or the minimal client (the bare servers), and the
hosts' count of their credits (loadtest/wsload.py runs them)."""

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack

from giftstream_client import Client, ClientClosed, ClientError, ServerError
from loadtest.tally import Tally
from loadtest.wsclient import WsClient

if TYPE_CHECKING:
    from loadtest.wsload import ConnPlan, WsPlan

# The protocol's bound on gifts in flight per connection.
MAX_IN_FLIGHT = 64


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

    def __init__(self, conn: "ConnPlan", plan: "WsPlan", run: Run, n: int) -> None:
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

    def __init__(self, client: Client, conn: "ConnPlan", plan: "WsPlan", run: Run, n: int) -> None:
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

    def __init__(
        self, client: WsClient, conn: "ConnPlan", plan: "WsPlan", run: Run, n: int
    ) -> None:
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
