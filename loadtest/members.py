"""The viewers and hosts of the service in one load process, on the minimal client: they
connect, authenticate and join, and reconnect and resume when the server drops them
(loadtest/wsload.py runs them)."""

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import msgpack

from loadtest.tally import Tally
from loadtest.wsclient import HandshakeError, OnMessage, WsClient, connect

if TYPE_CHECKING:
    from loadtest.wsload import ConnPlan, WsPlan

SUBPROTOCOL = "giftstream.v1+msgpack"
# Waits before each attempt to reconnect a viewer or host: quick, then every second.
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Member:
    """A viewer or a host of the service on the minimal client: when the server drops its
    connection (a worker killed, a slow consumer closed) it connects again, with a bounded
    backoff, and joins with `since` = the last offset it saw, so the room's history fills the
    gap once. Only the last message is kept (not decoded) for its offset: a thousand viewers
    stay cheap."""

    def __init__(self, conn: "ConnPlan", plan: "WsPlan", tally: Tally) -> None:
        self.conn = conn
        self.plan = plan
        self.tally = tally
        self.client: WsClient | None = None
        self.on_message: OnMessage | None = None
        self.epoch: str | None = None
        self.offset = 0
        self._last: bytes | None = None
        self._frames_before = 0  # frames of the connections before this one
        self._gift_frames_before = 0
        self._stopped = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def frames(self) -> int:
        return self._frames_before + (self.client.frames if self.client is not None else 0)

    @property
    def gift_frames(self) -> int:
        now = self.client.gift_frames if self.client is not None else 0
        return self._gift_frames_before + now

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
            self._gift_frames_before += self.client.gift_frames
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
