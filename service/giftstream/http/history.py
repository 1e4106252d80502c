"""GET /v1/history: the token's user's ledger from the ledger of record, newest first."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from giftstream.errors import InvalidField, LedgerUnavailable
from giftstream.http.common import current_account, runtime_of
from giftstream.store import keys
from giftstream.store.ledger import LedgerUnreachable

MAX_CURSOR_LENGTH = 512


async def history(request: Request) -> Response:
    """`?limit=N&cursor=C` → `{entries, next}`: the user's coins ledger and, for a host, the
    diamonds ledger of their room, merged; `next` is the cursor of the following page."""
    runtime = runtime_of(request)
    s = runtime.settings
    account = await current_account(request)
    raw_limit = request.query_params.get("limit")
    limit = s.history_page_size
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= s.history_page_max:
            raise InvalidField(f"'limit' must be a whole number from 1 to {s.history_page_max}")
        limit = int(raw_limit)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise InvalidField("'cursor' must be a cursor from a previous page")
    streams = [keys.user_ledger(account.id)]
    if account.room is not None:
        streams.append(keys.room_ledger(account.room))
    try:
        entries, after = await runtime.ledger.history(streams, cursor, limit)
    except LedgerUnreachable as e:
        raise LedgerUnavailable(
            "the ledger of record is unreachable for now; gifting is not affected, try again"
        ) from e
    return JSONResponse({"entries": entries, "next": after})
