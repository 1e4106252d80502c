"""The asyncio client: one user, one WebSocket at a time, reconnecting and resuming as needed."""

import asyncio
import dataclasses
import itertools
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from giftstream.client._inbox import Inbox
from giftstream.client._link import Dropped, Link
from giftstream.client.backoff import Backoff
from giftstream.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionFailed,
    InternalError,
    NotInRoom,
    ProtocolError,
    Unavailable,
    server_error,
)
from giftstream.client.events import (
    Ack,
    BattleEvent,
    CreditEvent,
    EpochChanged,
    Event,
    Frame,
    GiftEvent,
    Joined,
    RoomState,
    Streak,
    StreakEnded,
    Welcome,
)
from giftstream.errors import ErrorCode
from giftstream.wire.codec import JSON, MSGPACK, Undecodable, WrongFrameKind
from giftstream.wire.requests import MAX_ID_LENGTH

log = logging.getLogger("giftstream.client")

DEFAULT_BACKOFF = Backoff()
# Failures after which another connection attempt may succeed (`internal` and `unavailable`
# say so themselves).
_RETRYABLE = (OSError, TimeoutError, WebSocketException, Dropped, InternalError, Unavailable)
# Frames that answer a request, matched to it by `id`.
_ANSWERS = frozenset({"welcome", "joined", "left", "ack", "error", "battle_state"})
CLOSE_PROTOCOL_ERROR = 1002
# Streaks whose end a room remembers, so that an end heard again (from another worker after a
# reconnect) is not yielded twice.
ENDED_STREAKS_KEPT = 1024


@dataclass(eq=False)
class _Room:
    """Where the client is in one room it has joined."""

    name: str
    # The room's epoch and the last offset taken into the inbox; None until the first `joined`.
    epoch: str | None = None
    offset: int = 0
    live: bool | None = None
    # The connection the room is joined on, and what that join answered.
    link: Link | None = None
    joined: Joined | None = None
    # The inbox was full: events are dropped until a `join` with `since` fetches them again.
    lagging: bool = False
    refetching: bool = False
    # Ids of the streaks whose end was yielded, oldest first (at most ENDED_STREAKS_KEPT).
    ended: dict[str, None] = dataclasses.field(default_factory=dict)


class Client:
    """A giftstream user over one WebSocket, reconnected and resumed as needed.

    ```python
    async with Client("ws://127.0.0.1:8000/v1/ws", token) as client:
        await client.join(room)
        ack = await client.send_gift(room, "rose", count=3)
        async for event in client.events():
            print(event)
    ```

    Guarantees, across any number of dropped connections:

    - `send_gift` charges a gift at most once: it keeps one idempotency id and re-sends it after
      a reconnect until it gets the ack or an error.
    - `events()` yields each `gift` and `credit` event of a joined room at most once and in
      offset order (the end of a streak is a `StreakEnded`, not a gift); after a reconnect
      each room is joined again with `since` = the last offset seen, so none is missed (live
      `gift` frames the server shed under load excepted: they are lossy by protocol). A reset
      history is reported as `EpochChanged`.

    `url` is the server's WebSocket URL (`ws://host:port/v1/ws`), `token` the user's token.
    `json=True` speaks the JSON subprotocol instead of msgpack. `backoff` bounds reconnecting:
    when it runs out, the client fails with `ConnectionFailed`. At most `max_buffered_events`
    room events wait for `events()`; beyond that the client drops them and fetches them again
    from the room's history once `events()` has caught up, so acks are never held up by a slow
    reader. A program that never reads events should pass `receive_events=False`: the client
    then keeps no events and does not ask for the extension frames (it would only drop them).
    `open_timeout_s` bounds each connection attempt: the handshake, then auth and rejoins.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        json: bool = False,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_buffered_events: int = 10_000,
        receive_events: bool = True,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self._token = token
        self._codec = JSON if json else MSGPACK
        self._backoff = backoff
        self._receive_events = receive_events
        self._open_timeout_s = open_timeout_s
        self._inbox = Inbox(max_buffered_events)
        self._overflowed = 0
        self._messages = 0
        self._gift_frames = 0
        self._rooms: dict[str, _Room] = {}
        self._link: Link | None = None
        # Set while `_link` is usable, or once the client is closed or failed.
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._welcome: Welcome | None = None
        self._failure: ClientError | None = None
        self._closed = False
        self._ids = itertools.count(1)
        # Ids of auth, join and leave; unlike any gift id a program would choose.
        self._id_prefix = f"~{uuid.uuid4().hex[:8]}-"
        self._rng = random.Random()

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> Welcome:
        """Connect and authenticate, retrying per the backoff.

        Raises `Unauthenticated` for a refused token (not retried) and `ConnectionFailed` when
        the backoff runs out.
        """
        if self._supervisor is not None or self._closed:
            raise RuntimeError("connect() may be called once per client")
        link = await self._connect_with_backoff(first=True)
        self._use(link)
        self._supervisor = asyncio.create_task(self._supervise(link), name="giftstream-client")
        return self.welcome

    async def close(self) -> None:
        """Close the connection. Calls still waiting raise `ClientClosed`; `events()` ends."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        link, self._link = self._link, None
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        if link is not None:
            await link.close()
        self._inbox.end(None)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def welcome(self) -> Welcome:
        """The latest `welcome` (each reconnect authenticates again)."""
        if self._welcome is None:
            raise RuntimeError("not connected yet: call connect() first")
        return self._welcome

    @property
    def buffered_events(self) -> int:
        """How many received events wait for `events()`."""
        return len(self._inbox)

    @property
    def overflowed_events(self) -> int:
        """How many room events arrived while the buffer was full: each was dropped, to be
        fetched again from the history once `events()` catches up. A measure of how far the
        reader fell behind."""
        return self._overflowed

    @property
    def messages_received(self) -> int:
        """How many WebSocket messages the client has received, over every connection so far:
        answers and room frames alike, a `batch` counting as one. A measure of what the server
        sent, for load tools and tests."""
        return self._messages

    @property
    def gift_frames_received(self) -> int:
        """How many `gift` frames of its rooms the client has received that are a gift (not a
        streak's closing frame), over every connection: what the room delivered to it, for
        load tools and tests."""
        return self._gift_frames

    # -- requests ----------------------------------------------------------------------------

    async def join(self, room: str) -> Joined:
        """Join a room: its events from now on come through `events()`, and the client joins it
        again after every reconnect. Joining a room already joined returns its `Joined`.

        Raises `NotFound` for no such room.
        """
        state = self._rooms.setdefault(room, _Room(room))
        while True:
            link = await self._ready_link()
            if state.link is link and state.joined is not None:
                return state.joined
            try:
                answer = await link.ask(self._join_frame(state, self._next_id()))
            except Dropped:
                continue
            if answer["t"] == "error":
                if self._rooms.get(room) is state:
                    del self._rooms[room]
                raise server_error(answer)
            return Joined.from_frame(answer)

    async def leave(self, room: str) -> None:
        """Leave a room: no more of its events, and no rejoin after a reconnect.

        Raises `NotInRoom` if the client has not joined it.
        """
        if room not in self._rooms:
            raise NotInRoom(ErrorCode.NOT_IN_ROOM, f"you are not in room '{room}'")
        link = await self._ready_link()
        if self._rooms.pop(room, None) is None:
            return
        try:
            answer = await link.ask({"t": "leave", "id": self._next_id(), "room": room})
        except Dropped:
            return  # the next connection does not join it
        if answer["t"] == "error":
            raise server_error(answer)

    async def send_gift(self, room: str, gift: str, count: int = 1, id: str | None = None) -> Ack:
        """Send `count` of `gift` to the room's host and return the ack.

        `id` is the idempotency key (1-64 printable characters); a random UUID when None. If
        the connection drops before the ack, the client reconnects and sends the same id
        again, so the gift is charged once however often it is sent. An answer `unavailable`
        (the store failed mid-gift: charged or not, the server cannot tell) is followed the
        same way, the same id re-sent per the backoff until the true answer comes. Re-sending
        an id after an error (e.g. `InternalError`, or a timeout of the caller's) is safe too.

        Raises a `ServerError` subclass for a refusal: `InsufficientCoins`, `NotInRoom`,
        `RoomNotLive`, `NotFound` (unknown gift), `IdempotencyConflict`, `Unavailable` once the
        backoff ran out, ... and ValueError
        for an id the protocol does not allow (the server could not name it in its answer)
        or one that a call still waiting on this client uses.
        """
        if id is not None and not (0 < len(id) <= MAX_ID_LENGTH and id.isprintable()):
            raise ValueError(f"a gift id is 1 to {MAX_ID_LENGTH} printable characters: {id!r}")
        frame: Frame = {
            "t": "gift",
            "id": id if id is not None else str(uuid.uuid4()),
            "room": room,
            "gift": gift,
            "count": count,
        }
        loop = asyncio.get_running_loop()
        started = loop.time()
        delays = self._backoff.delays(self._rng)
        attempts = 0
        while True:
            link = await self._ready_link()
            try:
                answer = await link.ask(frame)
            except Dropped:
                continue
            if answer["t"] != "error":
                return Ack.from_frame(answer)
            error = server_error(answer)
            attempts += 1
            # The store failed mid-gift: the same id, re-sent, gets the gift's one true answer.
            if answer.get("retry") is not True or attempts >= self._backoff.max_attempts:
                raise error
            delay = next(delays)
            if loop.time() - started + delay > self._backoff.max_elapsed_s:
                raise error
            log.debug("gift %s: %s; re-sending in %.2f s", frame["id"], error, delay)
            await asyncio.sleep(delay)

    # -- battles -----------------------------------------------------------------------------

    async def invite(self, rooms: list[str], duration_s: int | None = None) -> BattleEvent:
        """Invite other live hosts' rooms (1 to 3) to a LIVE battle with this host's room; the
        battle as it stands (`state` "invited"). Raises a `ServerError` for a refusal (its
        `code`: `in_battle`, `room_not_live`, `forbidden`, ...)."""
        frame: Frame = {"t": "battle_invite", "rooms": rooms}
        if duration_s is not None:
            frame["duration_s"] = duration_s
        return await self._battle_request(frame)

    async def accept(self, battle: str) -> BattleEvent:
        """Accept a battle this host's room was invited to ("started" once every side has)."""
        return await self._battle_request({"t": "battle_accept", "battle": battle})

    async def decline(self, battle: str) -> BattleEvent:
        return await self._battle_request({"t": "battle_decline", "battle": battle})

    async def end_battle(self, battle: str) -> BattleEvent:
        """End a battle of this host's room early: the result, with the scores so far."""
        return await self._battle_request({"t": "battle_end", "battle": battle})

    async def _battle_request(self, frame: Frame) -> BattleEvent:
        # Not re-sent after a dropped connection: the caller reads the battle's state instead
        # (an invite sent twice would be two invites).
        link = await self._ready_link()
        try:
            answer = await link.ask({**frame, "id": self._next_id()})
        except Dropped as e:
            raise ConnectionFailed("the connection dropped before the answer", 1) from e
        if answer["t"] == "error":
            raise server_error(answer)
        return BattleEvent.from_frame(answer | {"t": "battle"})

    def events(self) -> AsyncIterator[Event]:
        """The events of the joined rooms, in order: `GiftEvent`, `CreditEvent` (to the
        room's host), `StreakEnded`, `RoomState`, `EpochChanged`, `BattleEvent` (the battles of
        the joined rooms). One reader at a time.

        The iteration ends when the client is closed, and raises `ConnectionFailed` (after
        the events already received) when the client gives up reconnecting.

        ```python
        async for event in client.events():
            if isinstance(event, GiftEvent):
                print(f"{event.sender_name} sent {event.count} x {event.gift_name}")
        ```
        """
        return _Events(self)

    async def _next_event(self) -> Event | None:
        event = await self._inbox.take()
        if event is not None:
            await self._refetch_lagging()
        return event

    # -- connecting --------------------------------------------------------------------------

    async def _connect_with_backoff(self, *, first: bool) -> Link:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delays = self._backoff.delays(self._rng)
        attempts = 0
        error: BaseException | None = None
        while attempts < self._backoff.max_attempts:
            if self._failure is not None:
                raise self._failure
            # A first connect tries at once; a reconnect waits, so clients cut off together
            # spread their returns.
            if attempts or not first:
                delay = next(delays)
                if loop.time() - started + delay > self._backoff.max_elapsed_s:
                    break
                await asyncio.sleep(delay)
            attempts += 1
            try:
                return await self._establish()
            except _RETRYABLE as e:
                log.debug("connecting to %s failed: %r", self.url, e)
                error = e
        elapsed = loop.time() - started
        raise ConnectionFailed(
            f"could not connect to {self.url}: {attempts} attempts in {elapsed:.1f} s"
            f" failed (last: {error!r})",
            attempts,
        ) from error

    async def _establish(self) -> Link:
        """Open a connection, authenticate, and join every room again from where it was."""
        ws = await connect(
            self.url,
            subprotocols=[Subprotocol(self._codec.subprotocol)],
            compression=None,
            open_timeout=self._open_timeout_s,
        )
        link = Link(ws, self._codec)
        link.reader = asyncio.create_task(self._read(link), name="giftstream-client-reader")
        try:
            async with asyncio.timeout(self._open_timeout_s):
                auth: Frame = {"t": "auth", "id": self._next_id(), "token": self._token}
                if self._receive_events:
                    # The room frames beyond protocol v1 (`room` → RoomState) and batches.
                    auth["extras"] = True
                answer = await link.ask(auth)
                if answer["t"] == "error":
                    raise server_error(answer)
                self._welcome = Welcome.from_frame(answer)
                # Rooms never joined yet are left to their own `join` call, which reports its
                # refusal to its caller instead of failing the client.
                for state in [r for r in self._rooms.values() if r.epoch is not None]:
                    answer = await link.ask(self._join_frame(state, self._next_id()))
                    if answer["t"] == "error":
                        raise server_error(answer)
        except BaseException:
            await link.close()
            raise
        return link

    async def _supervise(self, link: Link) -> None:
        """Wait for the connection to end, then reconnect; fail the client if that fails."""
        while True:
            assert link.reader is not None
            await link.reader
            if self._closed or self._failure is not None:
                return
            log.info("connection to %s lost; reconnecting", self.url)
            try:
                link = await self._connect_with_backoff(first=False)
            except ClientError as e:
                self._fail(e)
                return
            self._use(link)

    def _use(self, link: Link) -> None:
        self._link = link
        self._ready.set()

    def _fail(self, error: ClientError) -> None:
        if self._failure is None:
            self._failure = error
        self._link = None
        self._ready.set()
        self._inbox.end(error)

    async def _ready_link(self) -> Link:
        """The connection to send on, once connected, authenticated and rejoined."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise ClientClosed("the client is closed")
            if self._supervisor is None:
                raise RuntimeError("not connected yet: call connect() first")
            if self._link is not None:
                return self._link
            await self._ready.wait()

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def _join_frame(self, state: _Room, rid: str | None) -> Frame:
        frame: Frame = {"t": "join", "room": state.name}
        if rid is not None:
            frame["id"] = rid
        if state.epoch is not None:
            frame["since"] = {"epoch": state.epoch, "offset": state.offset}
        return frame

    # -- receiving ---------------------------------------------------------------------------

    async def _read(self, link: Link) -> None:
        try:
            async for message in link.ws:
                self._messages += 1
                text = message if isinstance(message, str) else None
                data = message if isinstance(message, bytes) else None
                self._dispatch(link, self._codec.decode(text, data))
        except ConnectionClosed:
            pass
        except (Undecodable, WrongFrameKind, ProtocolError, LookupError, TypeError) as e:
            # Resuming would read the same frame again: this client cannot go on.
            self._fail(ProtocolError(f"the server sent a frame this client cannot read: {e!r}"))
            await link.close(CLOSE_PROTOCOL_ERROR, "unreadable frame")
        finally:
            link.drop()
            if self._link is link:
                # Unusable from now on: callers wait for the reconnect.
                self._link = None
                self._ready.clear()

    def _dispatch(self, link: Link, frame: Any) -> None:
        if not isinstance(frame, dict):
            raise ProtocolError(f"a frame must be a map, not {type(frame).__name__}")
        kind = frame.get("t")
        if kind == "batch":
            for inner in frame["frames"]:
                self._dispatch(link, inner)
            return
        if kind == "gift" or kind == "credit":
            if kind == "gift" and not (frame.get("streak") or {}).get("end"):
                self._gift_frames += 1
            if not self._receive_events:
                # Only the offset matters (for resuming): no event to build.
                self._on_offset(frame["room"], frame["offset"])
            elif kind == "gift":
                self._on_event(GiftEvent.from_frame(frame))
            else:
                self._on_event(CreditEvent.from_frame(frame))
        elif kind == "room":
            self._on_room_state(frame["room"], frame["live"])
        elif kind in ("battle", "battle_score") and self._receive_events:
            self._push(BattleEvent.from_frame(frame))
        elif kind == "joined":
            self._on_joined(link, Joined.from_frame(frame))
        rid = frame.get("id")
        if kind in _ANSWERS and isinstance(rid, str):
            link.answer(rid, frame)

    def _on_joined(self, link: Link, joined: Joined) -> None:
        state = self._rooms.get(joined.room)
        if state is None:
            return
        if state.epoch is None:
            # A first join: live events from the room's offset on, no replay.
            state.offset = joined.offset
        elif state.epoch != joined.epoch:
            # The server replays the whole history of the new epoch.
            self._push(EpochChanged(joined.room, state.epoch, joined.epoch))
            state.offset = 0
        if state.live is not None and state.live != joined.live:
            # The live-only `room` frame was sent while this client was away.
            self._push(RoomState(joined.room, joined.live))
        state.epoch, state.live, state.link, state.joined = (
            joined.epoch,
            joined.live,
            link,
            joined,
        )
        state.lagging = state.refetching = False

    def _on_event(self, event: GiftEvent | CreditEvent) -> None:
        state = self._rooms.get(event.room)
        if state is None:
            return
        if isinstance(event, GiftEvent) and event.streak is not None and event.streak.end:
            self._on_streak_end(state, event)
            return
        if event.offset <= state.offset:
            return  # replayed and live events overlap at the seam of a resume
        if state.lagging or (self._receive_events and not self._inbox.offer(event)):
            state.lagging = True
            self._overflowed += 1
            return
        state.offset = event.offset

    def _on_streak_end(self, state: _Room, closing: GiftEvent) -> None:
        """The live-only frame closing a streak: a copy of its last tap, marked `end`. Yielded
        as a `StreakEnded` behind the events already taken (it is not a gift, and its offset
        is its tap's); lossy like every live animation, so dropped while the room lags."""
        assert closing.streak is not None
        if state.lagging or closing.streak.id in state.ended:
            return
        if closing.offset > state.offset:
            # Its tap's own frame was merged into it (both in one tick): the tap comes first.
            tap = dataclasses.replace(
                closing, streak=Streak(closing.streak.id, closing.streak.repeat, False)
            )
            self._on_event(tap)
            if state.lagging:
                return
        state.ended[closing.streak.id] = None
        if len(state.ended) > ENDED_STREAKS_KEPT:
            del state.ended[next(iter(state.ended))]
        self._inbox.offer(StreakEnded.from_gift(closing))

    def _on_offset(self, room: str, offset: int) -> None:
        """A room event for a client that keeps none: advance the room's offset."""
        state = self._rooms.get(room)
        if state is not None and offset > state.offset:
            state.offset = offset

    def _on_room_state(self, room: str, live: bool) -> None:
        state = self._rooms.get(room)
        if state is not None:
            state.live = live
            self._push(RoomState(room, live))

    def _push(self, event: Event) -> None:
        if self._receive_events:
            self._inbox.push(event)

    async def _refetch_lagging(self) -> None:
        """Once the inbox is half empty, join lagging rooms again with `since` on the same
        connection: the server replays what was dropped, then goes on live."""
        link = self._link
        if link is None or len(self._inbox) > self._inbox.limit // 2:
            return
        for state in list(self._rooms.values()):
            if state.lagging and not state.refetching and state.link is link:
                state.refetching = True
                try:
                    await link.send(self._join_frame(state, None))
                except Dropped:
                    return  # the reconnect joins it again with `since`


class _Events:
    """`Client.events()`: an iterator, not a generator, so that a cancelled `anext` (a timeout
    of the caller's) leaves it usable."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        event = await self._client._next_event()
        if event is None:
            raise StopAsyncIteration
        return event
