"""The exception tree. Each error carries a stable wire code and a human sentence.

    GiftstreamError            code = "internal"
    ├── BadFrame               bad_frame: decodable, but not a message (not a map, no `t`)
    ├── UnknownType            unknown_type: `t` names no request
    ├── InvalidField           invalid_field: a field missing, mistyped, out of range or unknown
    ├── Unauthenticated        unauthenticated: no valid token (yet)
    ├── Forbidden              forbidden: authenticated, but not allowed
    ├── NotFound               not_found: no such user or room
    ├── InsufficientCoins      insufficient_coins
    ├── UnknownGift            unknown_gift
    ├── UnavailableInRegion    unavailable_in_region
    ├── RoomNotLive            room_not_live
    ├── NotInRoom              not_in_room
    ├── IdempotencyConflict    idempotency_conflict: the same request id with other content
    ├── RateLimited            rate_limited
    ├── SpendingLimit          spending_limit: over the account's daily cap
    ├── PaymentDeclined        payment_declined: the store refused the payment
    ├── BelowMinimum           below_minimum: under the minimum cash-out
    ├── InsufficientDiamonds   insufficient_diamonds: a cash-out above the host's diamonds
    ├── ChestError             chest_not_open | chest_closed | not_present | already_claimed
    ├── PayloadTooLarge        payload_too_large: an HTTP body over the size limit
    ├── UnsupportedMediaType   unsupported_media_type: an HTTP body that is not JSON
    ├── LedgerUnavailable      ledger_unavailable: the ledger of record (PostgreSQL) is unreachable
    └── Unavailable            unavailable (retry): the store failed mid-request, so the outcome
                               is unknown; the same request re-sent (same id) learns it

Two codes answer a connection rather than a request, and are written by http/guard.py:
request_timeout (headers not received in time) and headers_too_large.

Errors become `error` frames or HTTP bodies only at the edge (app.py, realtime/connection.py).
"""

from enum import StrEnum


class ErrorCode(StrEnum):
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
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


# The HTTP status that carries each code in an HTTP error body.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.INVALID_FIELD: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INSUFFICIENT_COINS: 402,
    ErrorCode.UNKNOWN_GIFT: 404,
    ErrorCode.UNAVAILABLE_IN_REGION: 403,
    ErrorCode.ROOM_NOT_LIVE: 409,
    ErrorCode.NOT_IN_ROOM: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SPENDING_LIMIT: 403,
    ErrorCode.PAYMENT_DECLINED: 402,
    ErrorCode.BELOW_MINIMUM: 400,
    ErrorCode.INSUFFICIENT_DIAMONDS: 402,
    ErrorCode.CHEST_NOT_OPEN: 409,
    ErrorCode.CHEST_CLOSED: 409,
    ErrorCode.NOT_PRESENT: 403,
    ErrorCode.ALREADY_CLAIMED: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.LEDGER_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}


class GiftstreamError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL
    # Whether the same request, re-sent as it was, may get another answer (`retry: true`).
    retry: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadFrame(GiftstreamError):
    code = ErrorCode.BAD_FRAME


class UnknownType(GiftstreamError):
    code = ErrorCode.UNKNOWN_TYPE


class InvalidField(GiftstreamError):
    code = ErrorCode.INVALID_FIELD


class Unauthenticated(GiftstreamError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(GiftstreamError):
    code = ErrorCode.FORBIDDEN


class NotFound(GiftstreamError):
    code = ErrorCode.NOT_FOUND


class InsufficientCoins(GiftstreamError):
    code = ErrorCode.INSUFFICIENT_COINS


class UnknownGift(GiftstreamError):
    code = ErrorCode.UNKNOWN_GIFT


class UnavailableInRegion(GiftstreamError):
    code = ErrorCode.UNAVAILABLE_IN_REGION


class RoomNotLive(GiftstreamError):
    code = ErrorCode.ROOM_NOT_LIVE


class NotInRoom(GiftstreamError):
    code = ErrorCode.NOT_IN_ROOM


class IdempotencyConflict(GiftstreamError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT


class RateLimited(GiftstreamError):
    code = ErrorCode.RATE_LIMITED


class SpendingLimit(GiftstreamError):
    code = ErrorCode.SPENDING_LIMIT


class PaymentDeclined(GiftstreamError):
    code = ErrorCode.PAYMENT_DECLINED


class BelowMinimum(GiftstreamError):
    code = ErrorCode.BELOW_MINIMUM


class InsufficientDiamonds(GiftstreamError):
    code = ErrorCode.INSUFFICIENT_DIAMONDS


class ChestError(GiftstreamError):
    """A claim refused; the code says why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class PayloadTooLarge(GiftstreamError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(GiftstreamError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class LedgerUnavailable(GiftstreamError):
    code = ErrorCode.LEDGER_UNAVAILABLE


class Unavailable(GiftstreamError):
    """The store failed while the request ran: it may or may not have taken effect."""

    code = ErrorCode.UNAVAILABLE
    retry = True
