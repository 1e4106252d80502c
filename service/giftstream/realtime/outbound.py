"""A connection's bounded send queue (in bytes) with two delivery classes.

Lossy frames (animations) are dropped when the queue is full; a lossless frame (ack, error,
credit) that cannot fit marks the connection as a slow consumer, to be closed: the client
resumes from its last offset. Putting never awaits, so a fan-out loop never waits on a socket.
"""

import asyncio
from collections import deque
from collections.abc import Callable

from giftstream import metrics

Payload = bytes | str


class Outbound:
    def __init__(self, limit_bytes: int, on_overflow: Callable[[], None] | None = None) -> None:
        self.limit_bytes = limit_bytes
        # Called once when a lossless frame does not fit: the writer may be stuck on a socket
        # the client does not read, so it cannot be the one to notice.
        self.on_overflow = on_overflow
        self.queued_bytes = 0
        self.overflowed = False
        self.closed = False
        self._items: deque[Payload] = deque()
        self._ready = asyncio.Event()

    def put(self, data: Payload, lossless: bool) -> None:
        if self.closed or self.overflowed:
            return
        size = len(data)
        if self.queued_bytes + size > self.limit_bytes:
            if lossless:
                self.overflowed = True
                self._ready.set()
                if self.on_overflow is not None:
                    self.on_overflow()
            else:
                metrics.FRAMES_DROPPED.inc()
            return
        self._items.append(data)
        self.queued_bytes += size
        metrics.FRAMES_OUT.inc()
        self._ready.set()

    async def take(self) -> list[Payload]:
        """Wait for frames and take all that are queued; [] once closed or overflowed."""
        while not self._items:
            if self.closed or self.overflowed:
                return []
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            return []
        items = list(self._items)
        self._items.clear()
        self.queued_bytes = 0
        return items

    def close(self) -> None:
        self.closed = True
        self._ready.set()
