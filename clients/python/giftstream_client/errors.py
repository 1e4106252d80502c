"""Everything the client raises. One tree, so that `except ClientError` catches it all:

    ClientError                  base class
    ├── ServerError              an `error` frame: `.code`, `.message`, `.request_id`
    │   ├── InvalidRequest       bad_frame, unknown_type, invalid_field
    │   ├── Unauthenticated      unauthenticated (a bad, expired or unknown token)
    │   ├── Forbidden            forbidden (e.g. gifting yourself), unavailable_in_region
    │   │   └── SpendingLimit    spending_limit: over the account's daily cap
    │   ├── NotFound             not_found, unknown_gift
    │   ├── InsufficientCoins    insufficient_coins
    │   ├── RoomNotLive          room_not_live
    │   ├── NotInRoom            not_in_room (also raised locally by `leave`)
    │   ├── IdempotencyConflict  idempotency_conflict
    │   ├── RateLimited          rate_limited
    │   ├── InternalError        internal: retry with the same request id
    │   └── Unavailable          unavailable: the store failed mid-request (`send_gift` re-sends
    │                            by itself, per the backoff, before raising it)
    ├── ConnectionFailed         gave up (re)connecting: the backoff's attempts or time ran out
    ├── ProtocolError            the server sent a frame this client cannot read
    └── ClientClosed             the client was closed while the call waited

A code this version does not know raises a plain `ServerError` with that code.
"""

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every error code of the protocol (docs/protocol.md's error table); a server test holds
    this list to the server's own, so the two cannot drift apart."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INSUFFICIENT_COINS = "insufficient_coins"
    UNKNOWN_GIFT = "unknown_gift"
    UNAVAILABLE_IN_REGION = "unavailable_in_region"
    ROOM_NOT_LIVE = "room_not_live"
    NOT_IN_ROOM = "not_in_room"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    RATE_LIMITED = "rate_limited"
    SPENDING_LIMIT = "spending_limit"
    PAYMENT_DECLINED = "payment_declined"
    BELOW_MINIMUM = "below_minimum"
    INSUFFICIENT_DIAMONDS = "insufficient_diamonds"
    CHEST_NOT_OPEN = "chest_not_open"
    CHEST_CLOSED = "chest_closed"
    NOT_PRESENT = "not_present"
    ALREADY_CLAIMED = "already_claimed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    REQUEST_TIMEOUT = "request_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    LEDGER_UNAVAILABLE = "ledger_unavailable"
    IN_BATTLE = "in_battle"
    BATTLE_OVER = "battle_over"
    NOT_IN_BATTLE = "not_in_battle"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


class ClientError(Exception):
    """Base class of every exception raised by `giftstream_client`."""


class ServerError(ClientError):
    """The server answered a request with an `error` frame.

    `code` is the protocol's error code (compare with `ErrorCode`),
    `message` its human sentence, `request_id` the id of the request it answers, if any. For a
    gift, re-sending with `id=request_id` is always safe: it can never charge twice.
    """

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class InvalidRequest(ServerError):
    pass


class Unauthenticated(ServerError):
    pass


class Forbidden(ServerError):
    pass


class SpendingLimit(Forbidden):
    pass


class NotFound(ServerError):
    pass


class InsufficientCoins(ServerError):
    pass


class RoomNotLive(ServerError):
    pass


class NotInRoom(ServerError):
    pass


class IdempotencyConflict(ServerError):
    pass


class RateLimited(ServerError):
    pass


class InternalError(ServerError):
    pass


class Unavailable(ServerError):
    """The store failed while the server handled the request, so its outcome is unknown; the
    same request re-sent (same id) learns it. `send_gift` does that by itself, per the
    client's backoff, and raises this only once the backoff runs out."""


class ConnectionFailed(ClientError):
    """The client could not (re)connect within its `Backoff`; `__cause__` is the last failure."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class ProtocolError(ClientError):
    """The server sent something this client cannot read (a server bug, or a proxy's)."""


class ClientClosed(ClientError):
    """The client was closed: a gift that was waiting for its ack may or may not have been
    charged, and re-sending it with the same id on a new client is safe."""


_BY_CODE: dict[str, type[ServerError]] = {
    ErrorCode.BAD_FRAME: InvalidRequest,
    ErrorCode.UNKNOWN_TYPE: InvalidRequest,
    ErrorCode.INVALID_FIELD: InvalidRequest,
    ErrorCode.UNAUTHENTICATED: Unauthenticated,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.UNAVAILABLE_IN_REGION: Forbidden,
    ErrorCode.SPENDING_LIMIT: SpendingLimit,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.UNKNOWN_GIFT: NotFound,
    ErrorCode.INSUFFICIENT_COINS: InsufficientCoins,
    ErrorCode.ROOM_NOT_LIVE: RoomNotLive,
    ErrorCode.NOT_IN_ROOM: NotInRoom,
    ErrorCode.IDEMPOTENCY_CONFLICT: IdempotencyConflict,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.INTERNAL: InternalError,
    ErrorCode.UNAVAILABLE: Unavailable,
}


def server_error(frame: dict[str, Any]) -> ServerError:
    """The exception for an `error` frame."""
    code = str(frame.get("code", ErrorCode.INTERNAL))
    rid = frame.get("id")
    cls = _BY_CODE.get(code, ServerError)
    return cls(code, str(frame.get("message", "")), rid if isinstance(rid, str) else None)
