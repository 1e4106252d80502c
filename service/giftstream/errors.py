"""Every error code, declared once (ERRORS: its HTTP status, WebSocket answer, default sentence,
whether a retry may help, the Lua statuses that raise it), and the exception tree. Each error
carries a stable wire code and a human sentence.

    GiftstreamError            code = "internal", or the code it is given
    ├── Refused                a Redis Function's refusal: its Lua status names the code
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
    ├── PayloadTooLarge        payload_too_large: an HTTP body over the size limit
    ├── UnsupportedMediaType   unsupported_media_type: an HTTP body that is not JSON
    ├── LedgerUnavailable      ledger_unavailable: the ledger of record (PostgreSQL) is unreachable
    └── Unavailable            unavailable (retry): the store failed mid-request, so the outcome
                               is unknown; the same request re-sent (same id) learns it

The chest codes (chest_not_open, chest_closed, not_present, already_claimed) and the battle
codes (in_battle, battle_over, not_in_battle) come as Refused.
Two codes answer a connection rather than a request, and are written by http/guard.py:
request_timeout (headers not received in time) and headers_too_large.

Errors become `error` frames, closes or HTTP bodies only at the edge (realtime/session.py,
http/common.py), as ERRORS says; tests/unit/test_errors.py holds docs/protocol.md to it.

One module (~320 lines): one table, every error code once, and its exception class.
"""

from dataclasses import dataclass
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
    IN_BATTLE = "in_battle"
    BATTLE_OVER = "battle_over"
    NOT_IN_BATTLE = "not_in_battle"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One error code, declared once; the edges derive their answers from it."""

    code: ErrorCode
    # The status of an HTTP error body.
    http: int
    # What a raise site says unless it knows better (it usually does: it names the request).
    sentence: str
    # How a WebSocket answers it: None, an `error` frame (the connection stays open); a close
    # code, for a connection-level error: the connection is closed with it (and no frame).
    ws_close: int | None = None
    # Whether an HTTP answer closes the connection (what is left of the request is not read).
    http_close: bool = False
    # Whether the same request, re-sent as it was, may get another answer (`retry: true`).
    retry: bool = False
    # The statuses with which a Redis Function refuses a request for this reason
    # (store/functions/*.lua); each status names one code.
    lua: tuple[str, ...] = ()


_SPECS = (
    ErrorSpec(ErrorCode.BAD_FRAME, 400, "the frame is not a map with a string 't'"),
    ErrorSpec(ErrorCode.UNKNOWN_TYPE, 400, "'t' names no request"),
    ErrorSpec(
        ErrorCode.INVALID_FIELD,
        400,
        "a field is missing, mistyped, out of range or unknown",
        lua=("too_few", "not_paid", "insufficient_points"),
    ),
    ErrorSpec(ErrorCode.UNAUTHENTICATED, 401, "authenticate first, with a valid token"),
    ErrorSpec(
        ErrorCode.FORBIDDEN,
        403,
        "this is not allowed",
        lua=("forbidden", "frozen", "guardian_required", "own_chest"),
    ),
    ErrorSpec(
        ErrorCode.NOT_FOUND, 404, "there is no such thing", lua=("not_found", "no_user", "no_room")
    ),
    ErrorSpec(ErrorCode.INSUFFICIENT_COINS, 402, "the balance is too low", lua=("insufficient",)),
    ErrorSpec(ErrorCode.UNKNOWN_GIFT, 404, "there is no such gift"),
    ErrorSpec(ErrorCode.UNAVAILABLE_IN_REGION, 403, "this is not available in your region"),
    ErrorSpec(ErrorCode.ROOM_NOT_LIVE, 409, "the room is not live", lua=("room_not_live",)),
    ErrorSpec(ErrorCode.NOT_IN_ROOM, 409, "join the room first"),
    ErrorSpec(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        409,
        "this request id was already used for another request",
        lua=("conflict",),
    ),
    ErrorSpec(ErrorCode.RATE_LIMITED, 429, "too many requests", lua=("rate_limited",)),
    ErrorSpec(
        ErrorCode.SPENDING_LIMIT, 403, "over the daily spending limit", lua=("spending_limit",)
    ),
    ErrorSpec(ErrorCode.PAYMENT_DECLINED, 402, "the payment was declined"),
    ErrorSpec(ErrorCode.BELOW_MINIMUM, 400, "under the minimum cash-out", lua=("below_minimum",)),
    ErrorSpec(
        ErrorCode.INSUFFICIENT_DIAMONDS,
        402,
        "fewer diamonds than asked for",
        lua=("insufficient_diamonds",),
    ),
    ErrorSpec(ErrorCode.CHEST_NOT_OPEN, 409, "the chest is not open yet", lua=("not_open",)),
    ErrorSpec(ErrorCode.CHEST_CLOSED, 409, "the chest can no longer be claimed", lua=("closed",)),
    ErrorSpec(
        ErrorCode.NOT_PRESENT,
        403,
        "only viewers present when the chest opened can claim it",
        lua=("not_present",),
    ),
    ErrorSpec(ErrorCode.ALREADY_CLAIMED, 409, "you already claimed this chest", lua=("already",)),
    # On a WebSocket, a frame over max_frame_bytes (uvicorn closes it: ws_max_size).
    ErrorSpec(
        ErrorCode.PAYLOAD_TOO_LARGE,
        413,
        "the body is too large",
        http_close=True,
        ws_close=CLOSE_MESSAGE_TOO_BIG,
    ),
    # On a WebSocket, a frame of the other kind than the subprotocol's (text on msgpack).
    ErrorSpec(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        415,
        "send the body as JSON",
        ws_close=CLOSE_UNSUPPORTED_DATA,
    ),
    ErrorSpec(
        ErrorCode.REQUEST_TIMEOUT,
        408,
        "the request did not arrive in time",
        http_close=True,
    ),
    ErrorSpec(
        ErrorCode.HEADERS_TOO_LARGE,
        431,
        "the request line and headers are too large",
        http_close=True,
    ),
    ErrorSpec(ErrorCode.LEDGER_UNAVAILABLE, 503, "the ledger of record is unreachable for now"),
    ErrorSpec(ErrorCode.IN_BATTLE, 409, "the room is already in a battle", lua=("in_battle",)),
    ErrorSpec(
        ErrorCode.BATTLE_OVER,
        409,
        "the battle is no longer open to this: started, declined, expired or ended",
        lua=("battle_over",),
    ),
    ErrorSpec(
        ErrorCode.NOT_IN_BATTLE, 403, "your room is not a side of this battle", lua=("not_side",)
    ),
    ErrorSpec(ErrorCode.INTERNAL, 500, "the server failed to handle this request"),
    ErrorSpec(
        ErrorCode.UNAVAILABLE,
        503,
        "the store failed while handling this request, which may or may not have taken"
        " effect: re-send the same id to learn the outcome",
        retry=True,
    ),
)
ERRORS: dict[ErrorCode, ErrorSpec] = {spec.code: spec for spec in _SPECS}
# The code of each status with which a Redis Function refuses a request.
LUA_STATUS: dict[str, ErrorCode] = {status: spec.code for spec in _SPECS for status in spec.lua}


class GiftstreamError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def retry(self) -> bool:
        """Whether the same request, re-sent as it was, may get another answer."""
        return ERRORS[self.code].retry


class Refused(GiftstreamError):
    """A Redis Function refused the request. `status` is its Lua status, `values` the numbers
    that came with it (a balance, a limit, a claim order)."""

    def __init__(self, status: str, values: tuple[int, ...] = ()) -> None:
        code = LUA_STATUS.get(status, ErrorCode.INTERNAL)
        super().__init__(ERRORS[code].sentence, code)
        self.status = status
        self.values = values

    @property
    def value(self) -> int:
        return self.values[0] if self.values else 0

    def said(self, sentences: dict[ErrorCode, str]) -> GiftstreamError:
        """The same refusal in the caller's words (which know the request) where it has them."""
        return GiftstreamError(sentences.get(self.code, self.message), self.code)


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


class PayloadTooLarge(GiftstreamError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(GiftstreamError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class LedgerUnavailable(GiftstreamError):
    code = ErrorCode.LEDGER_UNAVAILABLE


class Unavailable(GiftstreamError):
    """The store failed while the request ran: it may or may not have taken effect."""

    code = ErrorCode.UNAVAILABLE
