"""The admin API: inspect a user or a room, freeze an account. Needs a token with role admin
(`giftstream admin-token` mints one)."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from giftstream.errors import ErrorCode, Forbidden, InvalidField, NotFound, Refused
from giftstream.http.common import authenticate, json_body, path_id, runtime_of, text_field
from giftstream.store import accounts, keys, rooms
from giftstream.store.connection import read_stream, text

LEDGER_TAIL = 20


def require_admin(request: Request) -> None:
    if authenticate(request).role != "admin":
        raise Forbidden("this needs an admin token")


async def inspect_user(request: Request) -> Response:
    require_admin(request)
    runtime = runtime_of(request)
    user = path_id(request, "user")
    account = await accounts.get_account(runtime.redis, user)
    if account is None:
        raise NotFound(f"there is no user '{user}'")
    raw = await runtime.redis.hget(keys.account(user), "frozen")
    entries = await read_stream(runtime.redis, keys.user_ledger(user))
    return JSONResponse(
        {
            "user": account.id,
            "name": account.name,
            "region": account.region,
            "role": account.role,
            "age": account.age,
            "coins": account.coins,
            "points": account.points,
            "room": account.room,
            "daily_cap": account.daily_cap,
            "frozen": raw is not None and text(raw) == "1",
            "ledger": [
                {"id": text(i), **{text(k): text(v) for k, v in e.items()}}
                for i, e in entries[-LEDGER_TAIL:]
            ],
        }
    )


async def inspect_room(request: Request) -> Response:
    require_admin(request)
    runtime = runtime_of(request)
    room = path_id(request, "room")
    state = await rooms.room_state(runtime.redis, room)
    if state is None:
        raise NotFound(f"there is no room '{room}'")
    session = await rooms.session_summary(runtime.redis, room, state.session)
    return JSONResponse(
        {
            "room": state.id,
            "host": state.host,
            "live": state.live,
            "epoch": state.epoch,
            "offset": state.offset,
            "viewers": state.viewers,
            "diamonds": state.diamonds,
            "region": state.region,
            "session": session,
        }
    )


async def freeze_user(request: Request) -> Response:
    require_admin(request)
    runtime = runtime_of(request)
    user = path_id(request, "user")
    body = await json_body(request, {"frozen", "reason"})
    frozen = body.get("frozen")
    if not isinstance(frozen, bool):
        raise InvalidField("'frozen' must be true or false")
    reason = text_field(body, "reason", required=False, max_length=200) or ""
    try:
        await accounts.set_frozen(runtime.redis, user, frozen, reason)
    except Refused as e:
        raise e.said({ErrorCode.NOT_FOUND: f"there is no user '{user}'"}) from e
    return JSONResponse({"user": user, "frozen": frozen})
