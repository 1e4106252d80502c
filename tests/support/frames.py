"""The raw-frame WebSocket client, for the tests whose subject is the wire itself (exact frames,
fields, error codes, batches, extension frames)."""

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect

from giftstream.wire.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, decode_json, encode_json

from .users import User

RECV_TIMEOUT_S = 5.0

Frame = dict[str, Any]
# A value of `changed()` that removes its field.
DROP: Any = object()


class Client:
    """A raw WebSocket client speaking protocol v1 in msgpack or JSON."""

    def __init__(self, ws: ClientConnection, json_mode: bool) -> None:
        self.ws = ws
        self.json_mode = json_mode
        # Frames of a `batch` not yet handed out: a batch is handled as its frames, in order.
        self.unbatched: deque[Frame] = deque()
        self.batches = 0
        # The `welcome` of `auth` (empty before it).
        self.welcome: Frame = {}

    @classmethod
    async def open(cls, ws_url: str, json_mode: bool = False, **kwargs: Any) -> "Client":
        subprotocol = JSON_SUBPROTOCOL if json_mode else MSGPACK_SUBPROTOCOL
        ws = await connect(ws_url, subprotocols=[subprotocol], **kwargs)  # type: ignore[list-item]
        return cls(ws, json_mode)

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, frame: Frame) -> None:
        if self.json_mode:
            await self.ws.send(encode_json(frame))
        else:
            await self.ws.send(msgpack.packb(frame))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = RECV_TIMEOUT_S) -> Frame:
        """The next frame; the frames of a `batch` come one by one."""
        if self.unbatched:
            return self.unbatched.popleft()
        frame = await self.recv_frame(timeout)
        if frame["t"] == "batch":
            self.batches += 1
            self.unbatched.extend(frame["frames"])
            return self.unbatched.popleft()
        return frame

    async def recv_frame(self, timeout: float = RECV_TIMEOUT_S) -> Frame:
        """The next WebSocket message, as it came."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.json_mode:
            assert isinstance(data, str), "JSON subprotocol frames must be text"
            frame: Frame = decode_json(data)
        else:
            assert isinstance(data, bytes), "msgpack subprotocol frames must be binary"
            frame = msgpack.unpackb(data, raw=False)
        return frame

    async def recv_until(
        self, match: Callable[[Frame], bool], timeout: float = RECV_TIMEOUT_S
    ) -> tuple[Frame, list[Frame]]:
        """The first frame matching, and every frame received before it."""
        skipped: list[Frame] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = await self.recv(max(left, 0.001))
            if match(frame):
                return frame, skipped
            skipped.append(frame)

    async def request(self, frame: Frame, reply: str) -> Frame:
        """Send a frame and return the first answer of type `reply` or `error`."""
        await self.send(frame)
        answer, _ = await self.recv_until(lambda f: f["t"] in (reply, "error"))
        return answer

    async def auth(self, user: User, extras: bool = False) -> Frame:
        """Authenticate; `extras` opts in to the room frames beyond protocol v1."""
        frame: Frame = {"t": "auth", "token": user.token}
        if extras:
            frame["extras"] = True
        answer = await self.request(frame, "welcome")
        assert answer["t"] == "welcome", answer
        self.welcome = answer
        return answer

    async def join(self, room: str, since: Frame | None = None) -> Frame:
        frame: Frame = {"t": "join", "room": room}
        if since is not None:
            frame["since"] = since
        answer = await self.request(frame, "joined")
        assert answer["t"] == "joined", answer
        return answer

    async def send_gift(self, room: str, gift: str, request_id: str, count: int = 1) -> None:
        """Send a gift frame, without waiting for its answer."""
        await self.send({"t": "gift", "id": request_id, "room": room, "gift": gift, "count": count})

    async def answer(self, request_id: str, timeout: float = RECV_TIMEOUT_S) -> Frame:
        """The `ack` or `error` of request `request_id`, whatever comes before it."""
        answer, _ = await self.recv_until(
            lambda f: f["t"] in ("ack", "error") and f.get("id") == request_id, timeout
        )
        return answer

    async def gift(
        self, room: str, gift: str, request_id: str, count: int = 1, timeout: float = RECV_TIMEOUT_S
    ) -> Frame:
        """Send a gift and return its `ack` or `error`."""
        await self.send_gift(room, gift, request_id, count)
        return await self.answer(request_id, timeout)


def changed(template: Frame, **changes: Any) -> Frame:
    """A copy of `template` (a frame or a request body) with `changes`: a field whose value is
    DROP is removed."""
    body = {**template, **changes}
    return {k: v for k, v in body.items() if v is not DROP}
