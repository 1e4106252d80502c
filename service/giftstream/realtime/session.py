"""One WebSocket connection: authentication, rooms, gifts, and what it sends."""

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from giftstream import battles, metrics, tokens
from giftstream.errors import (
    ERRORS,
    ErrorCode,
    GiftstreamError,
    NotFound,
    NotInRoom,
    RateLimited,
    Refused,
    RoomNotLive,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from giftstream.gifting import Gifting, Sender
from giftstream.realtime.frames import single
from giftstream.realtime.hub import Hub
from giftstream.realtime.limits import ConnectionLimits
from giftstream.realtime.member import Member
from giftstream.realtime.outbound import Outbound, Transport, fix_send_buffer
from giftstream.settings import Settings
from giftstream.store import accounts, chests, rooms
from giftstream.store.connection import STORE_UNAVAILABLE, Redis
from giftstream.wire.codec import Codec, Undecodable, WrongFrameKind
from giftstream.wire.requests import (
    Auth,
    BattleAction,
    BattleInvite,
    Claim,
    DropChest,
    Join,
    Leave,
    Ping,
    Request,
    SendGift,
    parse_request,
    request_id,
)
from giftstream.wire.wsframe import server_frame

log = logging.getLogger(__name__)

CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# Concurrent gifts in flight per connection: a client may pipeline, within bounds.
MAX_GIFTS_IN_FLIGHT = 64
# How long a closing connection waits for its gifts in flight to finish.
GIFT_DRAIN_S = 10.0
# How long a slow consumer has to take the close frame before its connection is dropped.
SLOW_CONSUMER_ABORT_S = 10.0
# How often a connection checks that it keeps up (its reader) and can still close (its socket).
WATCH_INTERVAL_S = 1.0


class Session:
    def __init__(
        self,
        ws: WebSocket,
        transport: Transport,
        codec: Codec,
        *,
        redis: Redis,
        hub: Hub,
        gifting: Gifting,
        secret: tokens.Keyring,
        settings: Settings,
        limits: ConnectionLimits,
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.redis = redis
        self.hub = hub
        self.gifting = gifting
        self.secret = secret
        self.settings = settings
        self.limits = limits
        self.outbound = Outbound(
            transport,
            settings.send_queue_bytes,
            on_overflow=self._on_overflow,
            kernel_bytes=fix_send_buffer(transport, settings.socket_send_buffer_bytes),
        )
        self._watch: asyncio.TimerHandle | None = None
        self._closing_seen: float | None = None
        self._closing: asyncio.Task[None] | None = None
        self.sender: Sender | None = None
        self.extras = False
        self.members: dict[str, Member] = {}
        self._gift_slots = asyncio.Semaphore(MAX_GIFTS_IN_FLIGHT)
        self._gift_tasks: set[asyncio.Task[None]] = set()
        self._close: tuple[int, str] | None = None

    # -- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        metrics.CONNECTIONS.inc()
        loop = asyncio.get_running_loop()
        auth_deadline = loop.call_later(self.settings.auth_timeout_s, self._on_auth_deadline)
        self._watch = loop.call_later(WATCH_INTERVAL_S, self._on_watch)
        try:
            await self._read_forever()
        finally:
            auth_deadline.cancel()
            self._watch.cancel()
            # Gifts already taken are finished, not cut in half (their ack may find the socket
            # gone; a retry of the same id gets it then), within a bound.
            if self._gift_tasks:
                _, late = await asyncio.wait(list(self._gift_tasks), timeout=GIFT_DRAIN_S)
                for task in late:
                    task.cancel()
            for member in list(self.members.values()):
                await self._leave(member.room)
            if self.sender is not None:
                self.limits.close_user(self.sender.user)
            self.outbound.close()
            if self._closing is None:
                await self._send_close()
            # Closed, the transport still waits to send what it holds: not for ever.
            loop.call_later(SLOW_CONSUMER_ABORT_S, self.outbound.abort_if_stuck)
            metrics.CONNECTIONS.dec()

    async def _read_forever(self) -> None:
        while self._close is None and not self.outbound.overflowed:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            metrics.FRAMES_IN.inc()
            try:
                decoded = self.codec.decode(message.get("text"), message.get("bytes"))
            except WrongFrameKind as e:
                self.send_error(UnsupportedMediaType(str(e)), None)
                return
            except Undecodable as e:
                self._close_with(CLOSE_INVALID_PAYLOAD, str(e)[:120])
                return
            await self._handle(decoded)

    def _close_with(self, code: int, reason: str) -> None:
        metrics.CLOSES.labels(str(code)).inc()
        self._close = (code, reason[:120])
        self.outbound.close()

    def _on_auth_deadline(self) -> None:
        if self.sender is not None or self._close is not None:
            return
        metrics.LIMITED.labels("auth_timeout").inc()
        self._close_with(
            CLOSE_POLICY, f"authenticate within {self.settings.auth_timeout_s:g} s of connecting"
        )
        # The read loop waits for a frame: the close wakes it (as a disconnect).
        self._closing = asyncio.create_task(self._send_close())

    def _on_watch(self) -> None:
        """Every WATCH_INTERVAL_S: close a reader that stays behind, and drop a connection
        whose transport is closing (uvicorn's keepalive timeout, say) but cannot send what it
        holds to a peer that does not read."""
        now = time.monotonic()
        self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL_S, self._on_watch)
        if self.outbound.closing:
            if self._closing_seen is None:
                self._closing_seen = now
            elif now - self._closing_seen > SLOW_CONSUMER_ABORT_S:
                self.outbound.abort()
            return
        behind = self.outbound.behind_for(now)
        if self._close is None and behind > self.settings.slow_reader_timeout_s:
            self._close_slow_consumer(f"behind for {behind:.0f} s")

    def _on_overflow(self) -> None:
        self._close_slow_consumer("a lossless frame did not fit")

    def _close_slow_consumer(self, why: str) -> None:
        """Close now (the close frame follows what the socket already holds); a client that
        does not read even that is cut off after a while."""
        metrics.CLOSES.labels("slow_consumer").inc()
        log.warning(
            "closing a slow consumer (user %s, %d bytes queued): %s",
            self.sender.user if self.sender else "-",
            self.outbound.queued_bytes,
            why,
        )
        self._close = (CLOSE_POLICY, "slow consumer: resume from your last offset")
        self.outbound.close()
        self._closing = asyncio.create_task(self._send_close())
        asyncio.get_running_loop().call_later(SLOW_CONSUMER_ABORT_S, self.outbound.abort)

    async def _send_close(self) -> None:
        if self._close is None or self.ws.client_state is not WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.close(*self._close)

    def send(self, frame: dict[str, Any]) -> None:
        self.outbound.put(server_frame(self.codec.encode(frame)), lossless=True)

    def send_error(self, error: GiftstreamError, rid: str | None) -> None:
        """Answer an error as the table says: an `error` frame, or a close for a
        connection-level one."""
        spec = ERRORS[error.code]
        if spec.ws_close is not None:
            self._close_with(spec.ws_close, error.message)
            return
        metrics.ERRORS.labels(error.code.value).inc()
        frame: dict[str, Any] = {"t": "error", "code": error.code.value, "message": error.message}
        if rid is not None:
            frame["id"] = rid
        if error.retry:
            frame["retry"] = True
        self.send(frame)

    # -- requests ----------------------------------------------------------------------------

    async def _handle(self, decoded: Any) -> None:
        rid = request_id(decoded)
        try:
            request = parse_request(decoded)
            if isinstance(request, SendGift):
                await self._start_gift(request)
            else:
                await self._dispatch(request)
        except GiftstreamError as e:
            self.send_error(e, rid)
        except STORE_UNAVAILABLE as e:
            log.warning("request failed, the store being unavailable: %r", e)
            self.send_error(Unavailable(ERRORS[ErrorCode.UNAVAILABLE].sentence), rid)
        except Exception:
            log.exception("request failed")
            self.send_error(GiftstreamError("the server failed to handle this request"), rid)

    async def _dispatch(self, request: Request) -> None:
        if isinstance(request, Auth):
            await self._auth(request)
            return
        if isinstance(request, Ping):
            self.send(_with_id({"t": "pong", "ts": int(time.time() * 1000)}, request.id))
            return
        if self.sender is None:
            raise Unauthenticated("send {t: 'auth', token} first")
        if isinstance(request, Join):
            await self._join(request)
        elif isinstance(request, DropChest):
            await self._drop_chest(request)
        elif isinstance(request, Claim):
            await self._claim(request)
        elif isinstance(request, BattleInvite | BattleAction):
            await self._battle(request)
        elif isinstance(request, Leave):
            await self._leave(request.room)
            self.send(_with_id({"t": "left", "room": request.room}, request.id))

    async def _auth(self, request: Auth) -> None:
        claims = tokens.verify(request.token, self.secret, int(time.time()))
        if self.sender is not None and self.sender.user != claims.user:
            raise Unauthenticated("this connection is already authenticated as another user")
        account = await accounts.get_account(self.redis, claims.user)
        if account is None:
            raise Unauthenticated("the token names a user that does not exist")
        if self.sender is None and not self.limits.open_user(account.id):
            limit = self.settings.max_connections_per_user
            self.send_error(RateLimited(f"at most {limit} connections per user"), request.id)
            self._close_with(CLOSE_POLICY, "too many connections for this user")
            return
        self.sender = Sender(account.id, account.name, account.region, account.age)
        self.extras = request.extras
        diamonds = await rooms.host_diamonds(self.redis, account.room)
        frame = {
            "t": "welcome",
            "user": account.id,
            "name": account.name,
            "region": account.region,
            "role": account.role,
            "room": account.room,
            "coins": account.coins,
            "diamonds": diamonds,
        }
        self.send(_with_id(frame, request.id))

    async def _join(self, request: Join) -> None:
        assert self.sender is not None
        if request.room in self.members:
            await self._leave(request.room)
        if len(self.members) >= self.settings.max_rooms_per_connection:
            metrics.LIMITED.labels("rooms_per_connection").inc()
            raise RateLimited(
                f"at most {self.settings.max_rooms_per_connection} rooms per connection:"
                " leave one first"
            )
        state = await rooms.room_state(self.redis, request.room)
        if state is None:
            raise NotFound(f"there is no room '{request.room}'")
        member = Member(
            room=request.room,
            user=self.sender.user,
            name=self.sender.name,
            is_host=state.host == self.sender.user,
            codec=self.codec,
            outbound=self.outbound,
            extras=self.extras,
            joined_ms=int(time.time() * 1000),
        )
        self.members[request.room] = member
        viewers = await self.hub.attach(member, state)
        # Read again now that live events reach the member: nothing falls between the two.
        state = await rooms.room_state(self.redis, request.room) or state
        joined: dict[str, Any] = {
            "t": "joined",
            "room": state.id,
            "host": state.host,
            "live": state.live,
            "epoch": state.epoch,
            "offset": state.offset,
            "viewers": viewers,
            "session": state.session,
            "host_name": state.host_name or state.host,
        }
        if state.battle:  # its state: GET /v1/battles/{battle}
            joined["battle"] = state.battle
        self.send(_with_id(joined, request.id))
        member.resume_from(state.offset)
        since = request.since
        if since is not None:
            start = since.offset if since.epoch == state.epoch else 0
            member.resume_from(start)
            for frame in await rooms.history_after(self.redis, request.room, start):
                if member.wants(frame.get("t")):
                    # Asked-for history is lossless: if it cannot fit, the client resumes again.
                    member.replay(single(frame), lossless=True)
        member.finish_replay()

    async def _leave(self, room: str) -> None:
        member = self.members.pop(room, None)
        if member is None:
            raise NotInRoom(f"you are not in room '{room}'")
        await self.hub.detach(member)

    # -- treasure chests ----------------------------------------------------------------------

    def _live_member(self, room: str) -> Member:
        member = self.members.get(room)
        if member is None:
            raise NotInRoom(f"join room '{room}' first")
        if not self.hub.room_live(room):
            raise RoomNotLive(f"room '{room}' is not live")
        return member

    async def _drop_chest(self, request: DropChest) -> None:
        assert self.sender is not None
        self._live_member(request.room)
        s = self.settings
        try:
            funded = await chests.fund(
                self.redis,
                self.sender.user,
                self.sender.name,
                request.id,
                request.room,
                request.coins,
                s.chest_countdown_ms,
                s.chest_claim_ms,
            )
        except Refused as e:
            raise e.said(
                {
                    ErrorCode.INSUFFICIENT_COINS: (
                        f"a chest of {request.coins} coins needs more than your {e.value}"
                    ),
                    ErrorCode.IDEMPOTENCY_CONFLICT: (
                        f"the id '{request.id}' was already used for another chest"
                    ),
                    ErrorCode.FORBIDDEN: "this account is frozen",
                    ErrorCode.NOT_FOUND: "your account no longer exists",
                }
            ) from e
        if funded.payload is not None:
            chest = await chests.create(self.redis, funded.payload)
        else:  # a retry of a drop already made: answered as the first time
            chest = await chests.times(self.redis, request.room, funded.chest)
        frame = {
            "t": "dropped",
            "id": request.id,
            "room": request.room,
            "chest": funded.chest,
            "coins": funded.balance,
            "opens_at": chest.get("opens_at"),
            "closes_at": chest.get("closes_at"),
        }
        self.send({k: v for k, v in frame.items() if v is not None})

    async def _claim(self, request: Claim) -> None:
        assert self.sender is not None
        member = self.members.get(request.room)
        if member is None:
            raise NotInRoom(f"join room '{request.room}' first")
        try:
            order = await chests.claim(
                self.redis,
                request.room,
                request.chest,
                self.sender.user,
                self.sender.name,
                member.joined_ms,
            )
        except Refused as e:
            chest = request.chest
            raise e.said(
                {
                    ErrorCode.CHEST_NOT_OPEN: f"chest '{chest}' is not open yet",
                    ErrorCode.CHEST_CLOSED: f"chest '{chest}' can no longer be claimed",
                    ErrorCode.ALREADY_CLAIMED: f"you already claimed chest '{chest}'",
                    ErrorCode.FORBIDDEN: "you cannot claim your own chest",
                    ErrorCode.NOT_FOUND: f"there is no chest '{chest}' in this room",
                }
            ) from e
        self.send(
            _with_id(
                {"t": "claimed", "room": request.room, "chest": request.chest, "order": order},
                request.id,
            )
        )

    # -- battles -----------------------------------------------------------------------------

    async def _battle(self, request: BattleInvite | BattleAction) -> None:
        """A host's battle request (the rules are in giftstream.battles): answered with the
        battle's state."""
        assert self.sender is not None
        account = await accounts.get_account(self.redis, self.sender.user)
        if account is None:
            raise Unauthenticated("your account no longer exists")
        service = battles.Battles(self.redis, self.settings)
        if isinstance(request, BattleInvite):
            state = await service.invite(account, request)
        elif request.action == "battle_accept":
            state = await service.accept(account, request.battle)
        elif request.action == "battle_decline":
            state = await service.decline(account, request.battle)
        else:
            state = await service.end(account, request.battle)
        self.send(_with_id({**state, "t": "battle_state"}, request.id))

    # -- gifts -------------------------------------------------------------------------------

    async def _start_gift(self, request: SendGift) -> None:
        # Back-pressure: while the window of gifts in flight is full the next frame is not
        # read, so a client that pipelines beyond it waits in its own socket (TCP flow
        # control), not in this worker's memory.
        await self._gift_slots.acquire()
        task = asyncio.create_task(self._gift(request))
        self._gift_tasks.add(task)
        task.add_done_callback(self._gift_tasks.discard)

    async def _gift(self, request: SendGift) -> None:
        try:
            await self._answer_gift(request)
        finally:
            self._gift_slots.release()

    async def _answer_gift(self, request: SendGift) -> None:
        started = time.perf_counter()
        try:
            ack = await self._send_gift(request)
        except GiftstreamError as e:
            metrics.GIFTS.labels(e.code.value).inc()
            self.send_error(e, request.id)
            return
        except STORE_UNAVAILABLE as e:
            # The debit may have run (and its credit by the relay later): only a retry of the
            # same id can tell the client which, never a guess of ours.
            log.warning("gift %s failed, the store being unavailable: %r", request.id, e)
            metrics.GIFTS.labels(ErrorCode.UNAVAILABLE.value).inc()
            self.send_error(Unavailable(ERRORS[ErrorCode.UNAVAILABLE].sentence), request.id)
            return
        except Exception:
            log.exception("gift failed")
            metrics.GIFTS.labels(ErrorCode.INTERNAL.value).inc()
            self.send_error(GiftstreamError("the gift could not be completed"), request.id)
            return
        metrics.GIFTS.labels("ok").inc()
        metrics.GIFT_SECONDS.observe(time.perf_counter() - started)
        self.send({"t": "ack", "id": ack.id, "event": ack.event, "coins": ack.coins})

    async def _send_gift(self, request: SendGift) -> Any:
        if self.sender is None:
            raise Unauthenticated("send {t: 'auth', token} first")
        refusal: GiftstreamError | None = None
        host = self.hub.room_host(request.room)
        if request.room not in self.members or host is None:
            refusal = NotInRoom(f"join room '{request.room}' before sending gifts to it")
        elif not self.hub.room_live(request.room):
            refusal = RoomNotLive(f"room '{request.room}' is not live")
        if refusal is not None or host is None:
            # A retry of a gift already sent is answered as the first time, wherever it comes.
            replay = await self.gifting.replay_of(self.sender, request)
            if replay is not None:
                return replay
            raise refusal or NotInRoom(f"join room '{request.room}' first")
        return await self.gifting.send(
            self.sender, request, host, self.hub.room_receives(request.room)
        )


def _with_id(frame: dict[str, Any], rid: str | None) -> dict[str, Any]:
    if rid is not None:
        frame["id"] = rid
    return frame
