"""What a WebSocket connection asks, and its answers: authentication, rooms, gifts and chests
(the connection's sending, deadlines and closes are connection.py's). ~370 lines: the requests
share one state (sender, members, gifts in flight), which reads best in one class."""

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket

from giftstream import battles, metrics, tokens
from giftstream.chests import Chests
from giftstream.errors import (
    ERRORS,
    ErrorCode,
    GiftstreamError,
    NotFound,
    NotInRoom,
    RateLimited,
    RoomNotLive,
    Unauthenticated,
    Unavailable,
)
from giftstream.gifting import Gifting, Sender
from giftstream.realtime.connection import CLOSE_POLICY, Connection
from giftstream.realtime.frames import single
from giftstream.realtime.hub import Hub
from giftstream.realtime.limits import ConnectionLimits
from giftstream.realtime.member import Member
from giftstream.realtime.outbound import Transport
from giftstream.settings import Settings
from giftstream.store import accounts, rooms
from giftstream.store.connection import STORE_UNAVAILABLE, Redis
from giftstream.wire.codec import Codec
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

log = logging.getLogger(__name__)

# Concurrent gifts in flight per connection: a client may pipeline, within bounds.
MAX_GIFTS_IN_FLIGHT = 64
# How long a closing connection waits for its gifts in flight to finish.
GIFT_DRAIN_S = 10.0
# The counter of gifts answered, looked up once rather than per gift.
GIFTS_OK = metrics.GIFTS.labels("ok")


class Session(Connection):
    """A connection's requests: authentication, rooms, gifts and chests."""

    __slots__ = (
        "_gift_slots",
        "_gift_tasks",
        "chests",
        "extras",
        "gifting",
        "hub",
        "limits",
        "members",
        "redis",
        "secret",
        "sender",
    )

    def __init__(
        self,
        ws: WebSocket,
        transport: Transport,
        codec: Codec,
        *,
        redis: Redis,
        hub: Hub,
        gifting: Gifting,
        chests: Chests,
        secret: tokens.Keyring,
        settings: Settings,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(ws, transport, codec, settings)
        self.redis = redis
        self.hub = hub
        self.gifting = gifting
        self.chests = chests
        self.secret = secret
        self.limits = limits
        self.sender: Sender | None = None
        self.extras = False
        self.members: dict[str, Member] = {}
        # Made at the first gift: most connections (viewers) never send one.
        self._gift_slots: asyncio.Semaphore | None = None
        self._gift_tasks: set[asyncio.Task[None]] | None = None

    # -- what the connection asks of its session ----------------------------------------------

    @property
    def user(self) -> str | None:
        return self.sender.user if self.sender is not None else None

    async def finish(self) -> None:
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

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, decoded: Any) -> None:
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
            self.close_with(CLOSE_POLICY, "too many connections for this user")
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
            start = member.resume_after(since.epoch, since.offset, state.epoch)
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
        dropped = await self.chests.drop(self.sender, request)
        frame: dict[str, Any] = {
            "t": "dropped",
            "id": request.id,
            "room": request.room,
            "chest": dropped.chest,
            "coins": dropped.coins,
        }
        if dropped.window is not None:
            frame["opens_at"] = dropped.window.opens_at
            frame["closes_at"] = dropped.window.closes_at
        self.send(frame)

    async def _claim(self, request: Claim) -> None:
        assert self.sender is not None
        member = self.members.get(request.room)
        if member is None:
            raise NotInRoom(f"join room '{request.room}' first")
        order = await self.chests.claim(self.sender, request, member.joined_ms)
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
        if self._gift_slots is None or self._gift_tasks is None:
            self._gift_slots = asyncio.Semaphore(MAX_GIFTS_IN_FLIGHT)
            self._gift_tasks = set()
        await self._gift_slots.acquire()
        task = asyncio.create_task(self._gift(request, self._gift_slots))
        self._gift_tasks.add(task)
        task.add_done_callback(self._gift_tasks.discard)

    async def _gift(self, request: SendGift, slots: asyncio.Semaphore) -> None:
        try:
            await self._answer_gift(request)
        finally:
            slots.release()

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
        GIFTS_OK.inc()
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
