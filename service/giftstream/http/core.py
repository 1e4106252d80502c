"""Users (dev mode), rooms, the gift catalog, the wallet, and the health endpoints."""

import asyncio
import secrets
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from giftstream import battles, metrics, tokens
from giftstream.errors import ErrorCode, InvalidField, NotFound, Refused, Unauthenticated
from giftstream.http.common import (
    current_account,
    int_field,
    json_body,
    path_id,
    required_text,
    runtime_of,
)
from giftstream.store import accounts, rooms
from giftstream.wire import fields
from giftstream.wire.requests import MAX_OFFSET

ROLES = ("viewer", "host", "admin")
ADULT_AGE = 30
MAX_AGE = 150
LIVE_ROOMS_LISTED = 50
STATIC_DIR = __file__.rsplit("/", 2)[0] + "/static"


async def create_dev_user(request: Request) -> Response:
    runtime = runtime_of(request)
    if not runtime.settings.dev:
        raise NotFound("dev endpoints exist only when the server runs with --dev")
    body = await json_body(request, {"name", "region", "role", "coins", "age"})
    name = required_text(body, "name")
    region = fields.region(body.get("region"))
    role = body.get("role", "viewer")
    if role not in ROLES:
        raise InvalidField(f"'role' must be one of {', '.join(ROLES)}")
    coins = int_field(body, "coins", 0, runtime.settings.dev_max_coins, default=0) or 0
    age = int_field(body, "age", 1, MAX_AGE, default=ADULT_AGE) or ADULT_AGE
    user = "u" + secrets.token_hex(6)
    now = int(time.time())
    await accounts.create_user(runtime.redis, user, name, region, role, coins, now * 1000, age)
    token = tokens.sign(
        tokens.Claims(user=user, role=role, expires=now + runtime.settings.token_ttl_s),
        runtime.secret,
    )
    return JSONResponse(
        {
            "user": user,
            "token": token,
            "name": name,
            "region": region,
            "role": role,
            "coins": coins,
            "age": age,
        }
    )


async def open_room(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    receives = account.age >= runtime.economy.minimum_age
    try:
        opened = await rooms.open_room(
            runtime.redis, account.id, receives, account.region, account.name
        )
    except Refused as e:
        if e.code is ErrorCode.NOT_FOUND:  # the token's user, gone since it was checked
            raise Unauthenticated("the token names a user that does not exist") from e
        raise e.said({ErrorCode.FORBIDDEN: "that room belongs to another host"}) from e
    return JSONResponse(
        {
            "room": opened.room,
            "host": account.id,
            "live": True,
            "epoch": opened.epoch,
            "session": opened.session,
        }
    )


async def end_room(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    room = path_id(request, "room")
    try:
        summary = await rooms.end_room(
            runtime.redis, room, account.id, runtime.settings.room_history_ttl_s
        )
    except Refused as e:
        raise e.said(
            {
                ErrorCode.NOT_FOUND: f"there is no room '{room}'",
                ErrorCode.FORBIDDEN: "only the room's host can end it",
            }
        ) from e
    await battles.room_ended(runtime.redis, room)  # its battle, if any, is forfeited
    return JSONResponse({"room": room, "live": False, "summary": summary})


async def get_session(request: Request) -> Response:
    runtime = runtime_of(request)
    room = path_id(request, "room")
    session = fields.digits(request.path_params["session"], "session", 0, MAX_OFFSET)
    summary = await rooms.session_summary(runtime.redis, room, session)
    if summary is None:
        raise NotFound(f"room '{room}' has no session {session}")
    return JSONResponse(summary)


async def list_rooms(request: Request) -> Response:
    """Live rooms, newest first (for a viewer picking a room)."""
    runtime = runtime_of(request)
    found = await rooms.live_rooms(runtime.redis, LIVE_ROOMS_LISTED)
    return JSONResponse(
        [
            {
                "room": s.id,
                "host": s.host,
                "live": s.live,
                "viewers": s.viewers,
                "host_name": s.host_name or s.host,
                "session": s.session,
            }
            for s in found
        ]
    )


async def list_gifts(request: Request) -> Response:
    return JSONResponse([gift.public() for gift in runtime_of(request).catalog])


async def wallet(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    diamonds = await rooms.host_diamonds(runtime.redis, account.room)
    limits = await runtime.wallet.limits(account)
    return JSONResponse(
        {
            "user": account.id,
            "coins": account.coins,
            "diamonds": diamonds,
            "points": account.points,
            "room": account.room,
            "region": account.region,
            "daily_cap": limits["daily_cap"],
            "spent_today": limits["spent_today"],
        }
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    checks: dict[str, bool] = {}
    try:
        checks["redis"] = bool(await asyncio.wait_for(runtime.redis.ping(), 2.0))
    except Exception:
        checks["redis"] = False
    checks["pubsub"] = await runtime.hub.ping()
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def prometheus(request: Request) -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def index(request: Request) -> Response:
    return FileResponse(f"{STATIC_DIR}/index.html")
