"""The Starlette application: HTTP routes, the WebSocket endpoint, and the lifespan that
connects the store, loads the Functions, and runs the hub and the relay."""

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from giftstream import metrics, tokens
from giftstream.domain.catalog import Catalog, load_catalog
from giftstream.errors import (
    HTTP_STATUS,
    Forbidden,
    GiftstreamError,
    InvalidField,
    NotFound,
    Unauthenticated,
)
from giftstream.gifting import Gifting
from giftstream.realtime.hub import Hub
from giftstream.realtime.session import Session
from giftstream.settings import Settings
from giftstream.store import accounts, rooms
from giftstream.store.connection import Redis, connect, load_functions, shared_secret
from giftstream.store.relay import relay_if_leader
from giftstream.wire.codec import negotiate
from giftstream.wire.requests import MAX_ID_LENGTH

log = logging.getLogger(__name__)

ROLES = ("viewer", "host", "admin")
REGION = re.compile(r"^[A-Z]{2}$")
HUB_TICK_S = 0.05
STATIC_DIR = __file__.rsplit("/", 1)[0] + "/static"


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    catalog: Catalog
    secret: bytes
    hub: Hub
    gifting: Gifting


def runtime_of(request: Request | WebSocket) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# -- helpers ---------------------------------------------------------------------------------


def error_response(error: GiftstreamError) -> JSONResponse:
    metrics.ERRORS.labels(error.code.value).inc()
    return JSONResponse(
        {"code": error.code.value, "message": error.message}, status_code=HTTP_STATUS[error.code]
    )


def authenticate(request: Request) -> tokens.Claims:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send the token as 'Authorization: Bearer <token>'")
    return tokens.verify(token.strip(), runtime_of(request).secret, int(time.time()))


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise InvalidField("the body must be a JSON object") from e
    if not isinstance(body, dict):
        raise InvalidField("the body must be a JSON object")
    return body


def _string_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise InvalidField(f"'{name}' must be a string of 1 to {MAX_ID_LENGTH} characters")
    return value


def handles_errors(
    endpoint: Any,
) -> Any:
    async def wrapped(request: Request) -> Response:
        try:
            response: Response = await endpoint(request)
            return response
        except GiftstreamError as e:
            return error_response(e)

    return wrapped


# -- HTTP ------------------------------------------------------------------------------------


async def create_dev_user(request: Request) -> Response:
    runtime = runtime_of(request)
    if not runtime.settings.dev:
        raise NotFound("dev endpoints exist only when the server runs with --dev")
    body = await json_body(request)
    unknown = set(body) - {"name", "region", "role", "coins"}
    if unknown:
        raise InvalidField(f"unknown fields: {', '.join(sorted(unknown))}")
    name = _string_field(body, "name")
    region = body.get("region")
    if not isinstance(region, str) or not REGION.match(region):
        raise InvalidField("'region' must be a two-letter country code such as 'US'")
    role = body.get("role", "viewer")
    if role not in ROLES:
        raise InvalidField(f"'role' must be one of {', '.join(ROLES)}")
    coins = body.get("coins", 0)
    limit = runtime.settings.dev_max_coins
    if not isinstance(coins, int) or isinstance(coins, bool) or not 0 <= coins <= limit:
        raise InvalidField(f"'coins' must be an integer from 0 to {limit}")
    user = "u" + secrets.token_hex(6)
    now = int(time.time())
    await accounts.create_user(runtime.redis, user, str(name), region, role, coins, now * 1000)
    token = tokens.sign(
        tokens.Claims(user=user, role=role, expires=now + runtime.settings.token_ttl_s),
        runtime.secret,
    )
    return JSONResponse(
        {"user": user, "token": token, "name": name, "region": region, "role": role, "coins": coins}
    )


async def open_room(request: Request) -> Response:
    runtime = runtime_of(request)
    claims = authenticate(request)
    try:
        room, epoch = await rooms.open_room(runtime.redis, claims.user)
    except rooms.NoSuchRoom as e:
        raise Unauthenticated("the token names a user that does not exist") from e
    except rooms.RoomForbidden as e:
        raise Forbidden("that room belongs to another host") from e
    return JSONResponse({"room": room, "host": claims.user, "live": True, "epoch": epoch})


async def end_room(request: Request) -> Response:
    runtime = runtime_of(request)
    claims = authenticate(request)
    room = request.path_params["room"]
    try:
        await rooms.end_room(runtime.redis, room, claims.user)
    except rooms.NoSuchRoom as e:
        raise NotFound(f"there is no room '{room}'") from e
    except rooms.RoomForbidden as e:
        raise Forbidden("only the room's host can end it") from e
    return JSONResponse({"room": room, "live": False})


async def list_gifts(request: Request) -> Response:
    return JSONResponse([gift.public() for gift in runtime_of(request).catalog])


async def wallet(request: Request) -> Response:
    runtime = runtime_of(request)
    claims = authenticate(request)
    account = await accounts.get_account(runtime.redis, claims.user)
    if account is None:
        raise NotFound("the token names a user that does not exist")
    diamonds = await rooms.host_diamonds(runtime.redis, account.room)
    return JSONResponse(
        {
            "user": account.id,
            "coins": account.coins,
            "diamonds": diamonds,
            "room": account.room,
            "region": account.region,
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


# -- WebSocket -------------------------------------------------------------------------------


async def websocket_endpoint(ws: WebSocket) -> None:
    runtime = runtime_of(ws)
    offered = ws.scope.get("subprotocols", [])
    codec = negotiate(offered)
    await ws.accept(subprotocol=codec.subprotocol if codec.subprotocol in offered else None)
    session = Session(
        ws,
        codec,
        redis=runtime.redis,
        hub=runtime.hub,
        gifting=runtime.gifting,
        secret=runtime.secret,
        settings=runtime.settings,
    )
    await session.run()


# -- lifespan --------------------------------------------------------------------------------


async def _relay_forever(runtime: Runtime) -> None:
    s = runtime.settings
    lease_ms = int(s.relay_interval_s * 1000 * 5) + 1000
    while True:
        await asyncio.sleep(s.relay_interval_s)
        try:
            applied = await relay_if_leader(
                runtime.redis, runtime.catalog.rate, s.room_history_max, s.relay_grace_ms, lease_ms
            )
        except Exception:
            log.exception("relay pass failed")
            continue
        if applied:
            metrics.RELAYED.inc(applied)
            log.warning("relay credited %d gift(s) whose credit was missing", applied)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app. Without settings, they are read from the environment (worker processes)."""
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        raise RuntimeError("create_app needs a Redis URL; `giftstream serve` provides one")
    redis_url = settings.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(redis_url)
        await load_functions(redis)
        secret = await shared_secret(redis, settings.secret)
        catalog = load_catalog(settings.catalog_path)
        hub = Hub(redis, redis_url, settings.streak_timeout_ms, HUB_TICK_S)
        await hub.start()
        runtime = Runtime(settings, redis, catalog, secret, hub, Gifting(redis, catalog, settings))
        app.state.runtime = runtime
        relay = asyncio.create_task(_relay_forever(runtime), name="relay")
        try:
            yield
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await hub.stop()
            await redis.aclose()

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", prometheus),
        Route("/v1/dev/users", handles_errors(create_dev_user), methods=["POST"]),
        Route("/v1/rooms", handles_errors(open_room), methods=["POST"]),
        Route("/v1/rooms/{room}/end", handles_errors(end_room), methods=["POST"]),
        Route("/v1/gifts", handles_errors(list_gifts)),
        Route("/v1/wallet", handles_errors(wallet)),
        WebSocketRoute("/v1/ws", websocket_endpoint),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
