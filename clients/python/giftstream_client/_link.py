"""One WebSocket connection: sends requests and matches their answers by request id."""

import asyncio

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from giftstream_client._codec import Codec
from giftstream_client.events import Frame


class Dropped(Exception):
    """The connection ended before the answer came: the request may be sent again."""


class Link:
    def __init__(self, ws: ClientConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[Frame | None]] = {}
        self._dropped = False

    async def send(self, frame: Frame) -> None:
        try:
            await self.ws.send(self.codec.encode(frame))
        except ConnectionClosed as e:
            raise Dropped from e

    async def ask(self, frame: Frame) -> Frame:
        """Send a request with an `id` and return its answer (an `error` frame included)."""
        rid: str = frame["id"]
        if self._dropped:
            raise Dropped
        if rid in self._waiting:
            raise ValueError(f"a request with id {rid!r} is already waiting for its answer")
        answer: asyncio.Future[Frame | None] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = answer
        try:
            await self.send(frame)
            result = await answer
        finally:
            del self._waiting[rid]
        if result is None:
            raise Dropped
        return result

    def answer(self, rid: str, frame: Frame) -> None:
        waiter = self._waiting.get(rid)
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)

    def drop(self) -> None:
        """The connection ended: every request still waiting raises `Dropped`."""
        self._dropped = True
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result(None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)
        if self.reader is not None and self.reader is not asyncio.current_task():
            # wait() does not raise the reader's own cancellation, only ours.
            await asyncio.wait([self.reader])
