"""A connection's bounded send buffer (in bytes) with two delivery classes, written straight to
its transport.

Frames arrive already framed (wire.wsframe): putting one is a synchronous `transport.write`, so
a fan-out loop never awaits a socket and a room event costs one write per member, not a task
wake-up and a trip through the ASGI layers. What the socket cannot take yet waits in the
transport's buffer, and that buffer is the bound: lossy frames (animations) are dropped when it
is full; a lossless frame (ack, error, credit) that cannot fit marks the connection as a slow
consumer, to be closed: the client resumes from its last offset.

The bound counts the kernel too: each socket's send buffer is fixed (SO_SNDBUF, which also
stops the kernel growing it up to tcp_wmem's maximum, 4 MiB), and the transport may hold the
bound less what the kernel may hold. A connection costs at most its bound, whoever holds it.
"""

import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from starlette.types import ASGIApp, Receive, Scope, Send

from giftstream import metrics

# Where KeepTransport puts a WebSocket connection's transport in its ASGI scope.
TRANSPORT_KEY = "giftstream.transport"


class Transport(Protocol):
    """What Outbound needs of a connection's transport (asyncio's, or uvloop's, which is no
    subclass of asyncio's)."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


def transport_of(send: Any) -> Transport | None:
    """The transport under the server's ASGI `send`: uvicorn's WebSocket protocols pass their
    bound `send` method, whose object holds the connection's transport; None elsewhere."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    needed = (
        "write",
        "get_write_buffer_size",
        "set_write_buffer_limits",
        "get_extra_info",
        "is_closing",
        "abort",
    )
    if transport is None or not all(callable(getattr(transport, n, None)) for n in needed):
        return None
    return cast(Transport, transport)


class KeepTransport:
    """ASGI middleware, outside any that wraps `send`: keeps each WebSocket connection's
    transport in its scope, for its Outbound."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[TRANSPORT_KEY] = transport_of(send)
        await self.app(scope, receive, send)


def fix_send_buffer(transport: Transport, requested: int) -> int:
    """Fix the send buffer of the transport's socket at `requested` bytes; what the kernel may
    hold for it (Linux doubles the figure for its bookkeeping, and reports that), or 0 with no
    socket to size."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, requested)
    held: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    return held


class Outbound:
    __slots__ = (
        "_transport",
        "behind_since",
        "budget_bytes",
        "closed",
        "limit_bytes",
        "on_overflow",
        "overflowed",
    )

    def __init__(
        self,
        transport: Transport,
        limit_bytes: int,
        on_overflow: Callable[[], None] | None = None,
        kernel_bytes: int = 0,
    ) -> None:
        self.limit_bytes = limit_bytes
        # What the transport may hold: the bound less what the kernel holds at most (never
        # less than half the bound, whatever the kernel's figure).
        self.budget_bytes = max(limit_bytes - kernel_bytes, limit_bytes // 2)
        # Called once when a lossless frame does not fit.
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False
        # Since when (time.monotonic) lossy frames are dropped for want of room; None while
        # the connection keeps up (its transport below half its budget).
        self.behind_since: float | None = None
        self._transport = transport
        # The server's own writes (pings, the close frame) wait only when the budget is full.
        transport.set_write_buffer_limits(high=self.budget_bytes)

    @property
    def queued_bytes(self) -> int:
        return self._transport.get_write_buffer_size()

    def behind_for(self, now: float) -> float:
        """How long the connection has been behind, in seconds (0 when it keeps up)."""
        return 0.0 if self.behind_since is None else now - self.behind_since

    @property
    def closing(self) -> bool:
        """Whether the transport is closing (or closed): what it holds may never be taken."""
        return self._transport.is_closing()

    def keeps_lossy(self) -> bool:
        """Whether lossy frames are still taken: the transport holds at most half its budget.
        When not, a message's lossy frames are dropped (counted so) and the connection is
        behind, as when `put` drops a lossy frame."""
        if self._transport.get_write_buffer_size() <= self.budget_bytes // 2:
            return True
        metrics.FRAMES_DROPPED.inc()
        if self.behind_since is None:
            self.behind_since = time.monotonic()
        return False

    def put(self, frame: bytes, lossless: bool) -> None:
        self.put_all([(frame, lossless)])

    def put_all(self, frames: list[tuple[bytes, bool]]) -> None:
        """Several frames in one write (one system call), each kept or dropped as by `put`."""
        if len(frames) == 1:  # a room's tick: one message per member
            frame, lossless = frames[0]
            if self._fits(frame, lossless, 0):
                self._transport.write(frame)
                metrics.FRAMES_OUT.inc()
            return
        kept: list[bytes] = []
        pending = 0
        for frame, lossless in frames:
            if self._fits(frame, lossless, pending):
                kept.append(frame)
                pending += len(frame)
        if kept:
            self._transport.write(b"".join(kept))
            metrics.FRAMES_OUT.inc(len(kept))

    def _fits(self, frame: bytes, lossless: bool, pending: int) -> bool:
        if self.closed or self.overflowed:
            return False
        if self._transport.is_closing():
            self.closed = True
            return False
        held = self._transport.get_write_buffer_size() + pending
        if held + len(frame) > self.budget_bytes:
            if lossless:
                self.overflowed = True
                if self.on_overflow is not None:
                    self.on_overflow()
            else:
                metrics.FRAMES_DROPPED.inc()
                if self.behind_since is None:
                    self.behind_since = time.monotonic()
            return False
        if held <= self.budget_bytes // 2:
            self.behind_since = None
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        """Drop the connection at once, whatever it still holds."""
        self._transport.abort()

    def abort_if_stuck(self) -> None:
        """Drop the connection if it still holds bytes its peer has not taken: a closing
        transport otherwise waits for a peer that does not read, for ever."""
        if self._transport.get_write_buffer_size() > 0:
            self._transport.abort()
