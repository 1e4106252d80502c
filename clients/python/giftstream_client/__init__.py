"""An asyncio client for giftstream that never loses nor doubles a gift.

```python
from giftstream_client import Client, GiftEvent

async with Client("ws://127.0.0.1:8000/v1/ws", token) as client:
    await client.join(room)
    ack = await client.send_gift(room, "rose", count=3)
    async for event in client.events():
        print(event)
```

See docs/client.md for the guarantees, reconnect semantics and error handling.
"""

from giftstream_client._client import Client
from giftstream_client.backoff import Backoff
from giftstream_client.errors import (
    ClientClosed,
    ClientError,
    ConnectionFailed,
    ErrorCode,
    Forbidden,
    IdempotencyConflict,
    InsufficientCoins,
    InternalError,
    InvalidRequest,
    NotFound,
    NotInRoom,
    ProtocolError,
    RateLimited,
    RoomNotLive,
    ServerError,
    SpendingLimit,
    Unauthenticated,
    Unavailable,
)
from giftstream_client.events import (
    Ack,
    BattleEvent,
    BattleSide,
    CreditEvent,
    EpochChanged,
    Event,
    GiftEvent,
    Joined,
    RoomState,
    Streak,
    StreakEnded,
    Welcome,
)

__all__ = [
    "Ack",
    "Backoff",
    "BattleEvent",
    "BattleSide",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionFailed",
    "CreditEvent",
    "EpochChanged",
    "ErrorCode",
    "Event",
    "Forbidden",
    "GiftEvent",
    "IdempotencyConflict",
    "InsufficientCoins",
    "InternalError",
    "InvalidRequest",
    "Joined",
    "NotFound",
    "NotInRoom",
    "ProtocolError",
    "RateLimited",
    "RoomNotLive",
    "RoomState",
    "ServerError",
    "SpendingLimit",
    "Streak",
    "StreakEnded",
    "Unauthenticated",
    "Unavailable",
    "Welcome",
]
