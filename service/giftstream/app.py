"""The Starlette application: routes, the WebSocket endpoint, and the lifespan that connects the
store, loads the Functions, and runs the hub and the relay."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from giftstream import metrics
from giftstream.chests import Chests
from giftstream.domain.catalog import load_catalog
from giftstream.domain.economy import load_economy
from giftstream.gifting import Gifting
from giftstream.http import admin, battles, core, history, money
from giftstream.http.common import Handler, handles_errors
from giftstream.keyring import load_keyring
from giftstream.payments import no_provider_verdict, simulated_verdict
from giftstream.realtime.connection import CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER
from giftstream.realtime.hub import Hub
from giftstream.realtime.limits import ConnectionLimits, origin_allowed
from giftstream.realtime.outbound import TRANSPORT_KEY, KeepTransport
from giftstream.realtime.session import Session
from giftstream.runtime import Runtime
from giftstream.settings import Settings
from giftstream.shutdown import exit_if_abandoned, finish, stop_task
from giftstream.store import keys
from giftstream.store.archive import Archiver
from giftstream.store.connection import connect, forget_legacy_secret, load_functions
from giftstream.store.ledger import Ledger, LedgerUnreachable
from giftstream.store.relay import relay_if_leader
from giftstream.wallet import Wallet
from giftstream.wire.codec import negotiate

log = logging.getLogger(__name__)


async def websocket_endpoint(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    limits = runtime.limits
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), runtime.settings.allowed_origins
    ):
        metrics.LIMITED.labels("origin").inc()
        await ws.close(code=CLOSE_POLICY)  # before accepting: the handshake gets HTTP 403
        return
    ip = ws.client.host if ws.client else "-"
    if not limits.attempt(ip):
        await ws.close(code=CLOSE_TRY_AGAIN_LATER)
        return
    offered = ws.scope.get("subprotocols", [])
    codec = negotiate(offered)
    await ws.accept(subprotocol=codec.subprotocol if codec.subprotocol in offered else None)
    if not limits.open_ip(ip):
        await ws.close(code=CLOSE_POLICY, reason="too many connections from this address")
        return
    transport = ws.scope.get(TRANSPORT_KEY)
    if transport is None:
        log.error("no transport under this WebSocket: serve giftstream with uvicorn")
        limits.close_ip(ip)
        await ws.close(code=CLOSE_INTERNAL, reason="the server cannot write to this connection")
        return
    try:
        session = Session(
            ws,
            transport,
            codec,
            redis=runtime.redis,
            hub=runtime.hub,
            gifting=runtime.gifting,
            chests=runtime.chests,
            secret=runtime.secret,
            settings=runtime.settings,
            limits=limits,
        )
        await session.run()
    finally:
        limits.close_ip(ip)


# Young-generation collections every this many allocations (CPython's default is 700), and
# older ones as rarely: a gift allocates many short-lived objects, and each collection stalls
# every connection of the worker — the tail of the ack latency in a storm (p99 ~180 → ~80 ms
# at half the maximum rate, docs/performance.md).
GC_THRESHOLDS = (100_000, 50, 1000)


def tune_gc() -> None:
    """Collect rarely, and never scan again what start-up loaded (modules, catalog, economy)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _relay_forever(runtime: Runtime, stop: asyncio.Event) -> None:
    s = runtime.settings
    lease_ms = int(s.relay_interval_s * 1000 * 5) + 1000
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(s.relay_interval_s):
                await stop.wait()
        if stop.is_set():
            return
        try:
            applied = await relay_if_leader(
                runtime.redis, runtime.gifting.rules, s.relay_grace_ms, lease_ms, stop
            )
        except Exception:
            log.exception("relay pass failed")
            continue
        if applied:
            metrics.RELAYED.inc(applied)
            log.warning("relay credited %d gift(s) whose credit was missing", applied)


def routes() -> list[Route | WebSocketRoute | Mount]:
    def post(path: str, endpoint: Handler) -> Route:
        return Route(path, handles_errors(endpoint), methods=["POST"])

    def get(path: str, endpoint: Handler) -> Route:
        return Route(path, handles_errors(endpoint), methods=["GET"])

    return [
        Route("/", core.index),
        Route("/healthz", core.healthz),
        Route("/readyz", core.readyz),
        Route("/metrics", core.prometheus),
        post("/v1/dev/users", core.create_dev_user),
        post("/v1/dev/store/events", money.store_event),
        post("/v1/rooms", core.open_room),
        get("/v1/rooms", core.list_rooms),
        post("/v1/rooms/{room}/end", core.end_room),
        get("/v1/rooms/{room}/sessions/{session}", core.get_session),
        get("/v1/gifts", core.list_gifts),
        get("/v1/wallet", core.wallet),
        get("/v1/wallet/limits", money.get_limits),
        post("/v1/wallet/limits", money.set_limits),
        get("/v1/packages", money.packages),
        get("/v1/packages/quote", money.quote),
        post("/v1/recharge", money.recharge),
        get("/v1/recharge/{receipt}", money.recharge_status),
        get("/v1/rewards", money.rewards),
        post("/v1/rewards/checkin", money.check_in),
        post("/v1/rewards/exchange", money.exchange),
        post("/v1/videos", money.create_video),
        post("/v1/videos/{video}/gifts", money.gift_video),
        get("/v1/earnings", money.get_earnings),
        get("/v1/history", history.history),
        get("/v1/payouts", money.list_payouts),
        post("/v1/payouts", money.create_payout),
        get("/v1/admin/users/{user}", admin.inspect_user),
        post("/v1/admin/users/{user}/freeze", admin.freeze_user),
        get("/v1/admin/rooms/{room}", admin.inspect_room),
        post("/v1/battles", battles.invite),
        get("/v1/battles/{battle}", battles.get_battle),
        post("/v1/battles/{battle}/accept", battles.accept),
        post("/v1/battles/{battle}/decline", battles.decline),
        post("/v1/battles/{battle}/end", battles.end),
        WebSocketRoute("/v1/ws", websocket_endpoint),
        Mount("/static", StaticFiles(directory=core.STATIC_DIR), name="static"),
    ]


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app. Without settings, they are read from the environment (worker processes)."""
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        raise RuntimeError("create_app needs a Redis URL; `giftstream serve` provides one")
    redis_url = settings.redis_url
    if not settings.database_url:
        raise RuntimeError("create_app needs a database URL; `giftstream serve` provides one")
    database_url = settings.database_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        secret = load_keyring(settings)
        redis = connect(redis_url)
        await load_functions(redis)
        await forget_legacy_secret(redis)
        catalog = load_catalog(settings.catalog_path)
        economy = load_economy(settings.economy_path)
        hub = Hub(redis, redis_url, settings)
        await hub.start()
        verdict = simulated_verdict if settings.dev else no_provider_verdict
        ledger = Ledger(database_url)
        runtime = Runtime(
            settings=settings,
            redis=redis,
            catalog=catalog,
            economy=economy,
            secret=secret,
            hub=hub,
            gifting=Gifting(redis, catalog, economy, settings, ledger),
            wallet=Wallet(redis, economy, catalog.rate, verdict),
            chests=Chests(redis, settings),
            limits=ConnectionLimits(settings),
            ledger=ledger,
        )
        try:
            await runtime.ledger.connected()  # applies the migrations
        except LedgerUnreachable as e:
            log.warning("PostgreSQL unreachable at start (gifting goes on; retrying): %s", e)
        app.state.runtime = runtime
        tune_gc()
        keys.pending_index(0)  # builds the slot tags now rather than on the first gift
        stop = asyncio.Event()
        relay = asyncio.create_task(_relay_forever(runtime, stop), name="relay")
        archiver = Archiver(redis, database_url, settings)
        archiving = asyncio.create_task(archiver.run(), name="archiver")
        try:
            yield
        finally:
            # Every step is bounded: a worker told to stop always stops (docs/reliability.md).
            stop.set()
            deadline = settings.shutdown_timeout_s
            await stop_task(relay, deadline, "the relay")
            await stop_task(archiving, deadline, "the archiver")
            await finish(archiver.aclose(), deadline, "closing the archiver")
            await finish(runtime.ledger.aclose(), deadline, "closing the ledger")
            await finish(hub.stop(), deadline, "stopping the hub")
            await finish(runtime.gifting.aclose(), deadline, "flushing the gift pipelines")
            await finish(redis.aclose(), deadline, "closing the store client")
            exit_if_abandoned(deadline)

    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=sorted(allowed_hosts(settings))),
        Middleware(KeepTransport),
    ]
    return Starlette(routes=routes(), lifespan=lifespan, middleware=middleware)


# Listening on every address: the Host header names none of them.
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """The Host names answered: the setting's, and the address the server listens on."""
    host = settings.host
    if host in WILDCARD_ADDRESSES:
        return settings.allowed_hosts
    return settings.allowed_hosts | {f"[{host}]" if ":" in host else host}
