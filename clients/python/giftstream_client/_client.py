"""The asyncio client: one user, one WebSocket at a time, reconnecting and resuming as needed.
Its connection (_connection.py) and what it receives (_receiver.py) are modules of their own.
The Client stays one class (~310 lines): its methods share one connection's state."""

import asyncio
import itertools
import logging
import random
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from giftstream_client._codec import JSON, MSGPACK
from giftstream_client._connection import Connection
from giftstream_client._link import Dropped
from giftstream_client._receiver import Receiver, Room, join_frame
from giftstream_client.backoff import Backoff
from giftstream_client.errors import ConnectionFailed, ErrorCode, NotInRoom, server_error
from giftstream_client.events import Ack, BattleEvent, Event, Frame, Joined, Welcome

log = logging.getLogger("giftstream_client")

DEFAULT_BACKOFF = Backoff()
# The longest request id the protocol allows (a server test holds it to the server's).
MAX_ID_LENGTH = 64


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
        self._backoff = backoff
        self._receiver = Receiver(max_buffered_events, receive_events)
        self._ids = itertools.count(1)
        # Ids of auth, join and leave; unlike any gift id a program would choose.
        self._id_prefix = f"~{uuid.uuid4().hex[:8]}-"
        self._rng = random.Random()
        self._connection = Connection(
            url,
            token,
            codec=JSON if json else MSGPACK,
            backoff=backoff,
            open_timeout_s=open_timeout_s,
            receiver=self._receiver,
            next_id=self._next_id,
            rng=self._rng,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> Welcome:
        """Connect and authenticate, retrying per the backoff.

        Raises `Unauthenticated` for a refused token (not retried) and `ConnectionFailed` when
        the backoff runs out.
        """
        if self._connection.started or self._connection.closed:
            raise RuntimeError("connect() may be called once per client")
        await self._connection.start()
        return self.welcome

    async def close(self) -> None:
        """Close the connection. Calls still waiting raise `ClientClosed`; `events()` ends."""
        await self._connection.close()

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
        welcome = self._connection.welcome
        if welcome is None:
            raise RuntimeError("not connected yet: call connect() first")
        return welcome

    @property
    def buffered_events(self) -> int:
        """How many received events wait for `events()`."""
        return len(self._receiver.inbox)

    @property
    def overflowed_events(self) -> int:
        """How many room events arrived while the buffer was full: each was dropped, to be
        fetched again from the history once `events()` catches up. A measure of how far the
        reader fell behind."""
        return self._receiver.overflowed

    @property
    def messages_received(self) -> int:
        """How many WebSocket messages the client has received, over every connection so far:
        answers and room frames alike, a `batch` counting as one. A measure of what the server
        sent, for load tools and tests."""
        return self._receiver.messages

    @property
    def gift_frames_received(self) -> int:
        """How many `gift` frames of its rooms the client has received that are a gift (not a
        streak's closing frame), over every connection: what the room delivered to it, for
        load tools and tests."""
        return self._receiver.gift_frames

    # -- requests ----------------------------------------------------------------------------

    async def join(self, room: str) -> Joined:
        """Join a room: its events from now on come through `events()`, and the client joins it
        again after every reconnect. Joining a room already joined returns its `Joined`.

        Raises `NotFound` for no such room.
        """
        state = self._receiver.rooms.setdefault(room, Room(room))
        while True:
            link = await self._connection.ready_link()
            if state.link is link and state.joined is not None:
                return state.joined
            try:
                answer = await link.ask(join_frame(state, self._next_id()))
            except Dropped:
                continue
            if answer["t"] == "error":
                if self._receiver.rooms.get(room) is state:
                    del self._receiver.rooms[room]
                raise server_error(answer)
            return Joined.from_frame(answer)

    async def leave(self, room: str) -> None:
        """Leave a room: no more of its events, and no rejoin after a reconnect.

        Raises `NotInRoom` if the client has not joined it.
        """
        if room not in self._receiver.rooms:
            raise NotInRoom(ErrorCode.NOT_IN_ROOM, f"you are not in room '{room}'")
        link = await self._connection.ready_link()
        if self._receiver.rooms.pop(room, None) is None:
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
            link = await self._connection.ready_link()
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
        link = await self._connection.ready_link()
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
        event = await self._receiver.inbox.take()
        if event is not None:
            await self._receiver.refetch_lagging(self._connection.link)
        return event

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"


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
