"""What the client receives: the rooms it has joined, where it is in each, and the events it
keeps for `Client.events()` (each at most once, in offset order, across resumes)."""

import dataclasses
from dataclasses import dataclass
from typing import Any

from giftstream_client._inbox import Inbox
from giftstream_client._link import Dropped, Link
from giftstream_client.errors import ProtocolError
from giftstream_client.events import (
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
)

# Frames that answer a request, matched to it by `id`.
ANSWERS = frozenset({"welcome", "joined", "left", "ack", "error", "battle_state"})
# Streaks whose end a room remembers, so that an end heard again (from another worker after a
# reconnect) is not yielded twice.
ENDED_STREAKS_KEPT = 1024


@dataclass(eq=False)
class Room:
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


def join_frame(room: Room, rid: str | None) -> Frame:
    """The `join` of a room: with `since` once it was joined, so the server replays the rest."""
    frame: Frame = {"t": "join", "room": room.name}
    if rid is not None:
        frame["id"] = rid
    if room.epoch is not None:
        frame["since"] = {"epoch": room.epoch, "offset": room.offset}
    return frame


class Receiver:
    """The rooms and the inbox, fed with every frame the connections receive.

    `receive_events=False` keeps no events, only each room's offset (for resuming)."""

    def __init__(self, max_buffered_events: int, receive_events: bool) -> None:
        self.inbox = Inbox(max_buffered_events)
        self.receive_events = receive_events
        self.rooms: dict[str, Room] = {}
        self.overflowed = 0
        self.messages = 0
        self.gift_frames = 0

    def dispatch(self, link: Link, frame: Any) -> None:
        """Take one received frame: room events into the rooms, answers to their requests.

        Raises ProtocolError, LookupError or TypeError for a frame this client cannot read."""
        if not isinstance(frame, dict):
            raise ProtocolError(f"a frame must be a map, not {type(frame).__name__}")
        kind = frame.get("t")
        if kind == "batch":
            for inner in frame["frames"]:
                self.dispatch(link, inner)
            return
        if kind == "gift" or kind == "credit":
            if kind == "gift" and not (frame.get("streak") or {}).get("end"):
                self.gift_frames += 1
            if not self.receive_events:
                # Only the offset matters (for resuming): no event to build.
                self._on_offset(frame["room"], frame["offset"])
            elif kind == "gift":
                self._on_event(GiftEvent.from_frame(frame))
            else:
                self._on_event(CreditEvent.from_frame(frame))
        elif kind == "room":
            self._on_room_state(frame["room"], frame["live"])
        elif kind in ("battle", "battle_score"):
            self._push(BattleEvent.from_frame(frame))
        elif kind == "joined":
            self._on_joined(link, Joined.from_frame(frame))
        rid = frame.get("id")
        if kind in ANSWERS and isinstance(rid, str):
            link.answer(rid, frame)

    def _on_joined(self, link: Link, joined: Joined) -> None:
        state = self.rooms.get(joined.room)
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
        state = self.rooms.get(event.room)
        if state is None:
            return
        if isinstance(event, GiftEvent) and event.streak is not None and event.streak.end:
            self._on_streak_end(state, event)
            return
        if event.offset <= state.offset:
            return  # replayed and live events overlap at the seam of a resume
        if state.lagging or (self.receive_events and not self.inbox.offer(event)):
            state.lagging = True
            self.overflowed += 1
            return
        state.offset = event.offset

    def _on_streak_end(self, state: Room, closing: GiftEvent) -> None:
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
        self.inbox.offer(StreakEnded.from_gift(closing))

    def _on_offset(self, room: str, offset: int) -> None:
        """A room event for a client that keeps none: advance the room's offset."""
        state = self.rooms.get(room)
        if state is not None and offset > state.offset:
            state.offset = offset

    def _on_room_state(self, room: str, live: bool) -> None:
        state = self.rooms.get(room)
        if state is not None:
            state.live = live
            self._push(RoomState(room, live))

    def _push(self, event: Event) -> None:
        if self.receive_events:
            self.inbox.push(event)

    async def refetch_lagging(self, link: Link | None) -> None:
        """Once the inbox is half empty, join lagging rooms again with `since` on the same
        connection: the server replays what was dropped, then goes on live."""
        if link is None or len(self.inbox) > self.inbox.limit // 2:
            return
        for state in list(self.rooms.values()):
            if state.lagging and not state.refetching and state.link is link:
                state.refetching = True
                try:
                    await link.send(join_frame(state, None))
                except Dropped:
                    return  # the reconnect joins it again with `since`
