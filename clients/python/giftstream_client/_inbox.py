"""The events received and not yet taken by `Client.events()`: bounded, so a slow reader costs
a bounded amount of memory (room events beyond the bound are re-fetched from the history)."""

import asyncio
from collections import deque

from giftstream_client.errors import ClientError
from giftstream_client.events import Event


class Inbox:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_buffered_events must be at least 1")
        self.limit = limit
        self._items: deque[Event] = deque()
        self._arrived = asyncio.Event()
        self._ended = False
        self._error: ClientError | None = None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, event: Event) -> bool:
        """Add an event unless the inbox is full; False when it was not added."""
        if len(self._items) >= self.limit:
            return False
        self.push(event)
        return True

    def push(self, event: Event) -> None:
        """Add an event that cannot be fetched again, whatever the bound."""
        self._items.append(event)
        self._arrived.set()

    def end(self, error: ClientError | None) -> None:
        """No more events: `take` returns the ones left, then None, or raises `error`."""
        if not self._ended:
            self._ended, self._error = True, error
        self._arrived.set()

    async def take(self) -> Event | None:
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return None
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.popleft()
