"""Typed frames: the answers to requests, and the room events `Client.events()` yields.

Field names follow the wire (docs/protocol.md), except `from`/`to`, which are `sender`/`host`,
and the gift's `name`, which is `gift_name`. Extension fields are None when a server omits them.
"""

from dataclasses import dataclass
from typing import Any

Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Welcome:
    """The answer to `auth`: who the token names, and their balances."""

    user: str
    coins: int
    diamonds: int
    name: str | None = None
    region: str | None = None
    role: str | None = None
    room: str | None = None

    @classmethod
    def from_frame(cls, f: Frame) -> "Welcome":
        return cls(
            user=f["user"],
            coins=f["coins"],
            diamonds=f["diamonds"],
            name=f.get("name"),
            region=f.get("region"),
            role=f.get("role"),
            room=f.get("room"),
        )


@dataclass(frozen=True, slots=True)
class Joined:
    """The answer to `join`: the room's state when it was joined."""

    room: str
    host: str
    live: bool
    epoch: str
    offset: int
    viewers: int

    @classmethod
    def from_frame(cls, f: Frame) -> "Joined":
        return cls(f["room"], f["host"], f["live"], f["epoch"], f["offset"], f["viewers"])


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a gift: `event` is the gift's event id, `coins` the balance after it."""

    id: str
    event: str
    coins: int

    @classmethod
    def from_frame(cls, f: Frame) -> "Ack":
        return cls(f["id"], f["event"], f["coins"])


@dataclass(frozen=True, slots=True)
class Streak:
    """`id` is the event id of the streak's first tap; `repeat` the running total of gifts;
    `end` is True on the wire's live-only frame that closes the streak, which the client yields
    as a `StreakEnded` (so `end` is False on every `GiftEvent` it yields)."""

    id: str
    repeat: int
    end: bool


@dataclass(frozen=True, slots=True)
class GiftEvent:
    """A gift in a room (the animation). Delivered to everyone in the room."""

    room: str
    event: str
    offset: int
    sender: str
    host: str
    gift: str
    count: int
    coins: int
    streak: Streak | None = None
    sender_name: str | None = None
    gift_name: str | None = None
    diamonds: int | None = None
    ts: int | None = None

    @classmethod
    def from_frame(cls, f: Frame) -> "GiftEvent":
        s = f.get("streak")
        return cls(
            room=f["room"],
            event=f["event"],
            offset=f["offset"],
            sender=f["from"],
            host=f["to"],
            gift=f["gift"],
            count=f["count"],
            coins=f["coins"],
            streak=Streak(s["id"], s["repeat"], s["end"]) if s is not None else None,
            sender_name=f.get("from_name"),
            gift_name=f.get("name"),
            diamonds=f.get("diamonds"),
            ts=f.get("ts"),
        )


@dataclass(frozen=True, slots=True)
class StreakEnded:
    """A streak of taps ended: `streak` is its id (the event id of its first tap), `repeat` its
    final total, `event` and `offset` those of its last tap, whose `GiftEvent` came before (or,
    if its live frame was merged away, one at a later offset did). Not a gift: the server's
    live-only, lossy frame closing a streak, yielded at most once per streak."""

    room: str
    streak: str
    repeat: int
    event: str
    offset: int
    sender: str
    gift: str
    sender_name: str | None = None
    gift_name: str | None = None

    @classmethod
    def from_gift(cls, g: GiftEvent) -> "StreakEnded":
        assert g.streak is not None
        return cls(
            room=g.room,
            streak=g.streak.id,
            repeat=g.streak.repeat,
            event=g.event,
            offset=g.offset,
            sender=g.sender,
            gift=g.gift,
            sender_name=g.sender_name,
            gift_name=g.gift_name,
        )


@dataclass(frozen=True, slots=True)
class CreditEvent:
    """Diamonds credited to the host for a gift. Delivered only to the room's host."""

    room: str
    event: str
    offset: int
    sender: str
    gift: str
    count: int
    diamonds: int
    total: int
    sender_name: str | None = None
    gift_name: str | None = None
    coins: int | None = None
    ts: int | None = None
    # A gift to one of the host's videos: the video's id (the gift is not in the room's
    # animations, only in its credits); None for a live gift.
    video: str | None = None

    @classmethod
    def from_frame(cls, f: Frame) -> "CreditEvent":
        return cls(
            room=f["room"],
            event=f["event"],
            offset=f["offset"],
            sender=f["from"],
            gift=f["gift"],
            count=f["count"],
            diamonds=f["diamonds"],
            total=f["total"],
            sender_name=f.get("from_name"),
            gift_name=f.get("name"),
            coins=f.get("coins"),
            ts=f.get("ts"),
            video=f.get("video"),
        )


@dataclass(frozen=True, slots=True)
class RoomState:
    """The room went live or ended. Also yielded after a reconnect when the room changed state
    while the client was away (the server's `room` frame is live-only)."""

    room: str
    live: bool


@dataclass(frozen=True, slots=True)
class EpochChanged:
    """The room's history was reset while the client was away. The events that follow replay
    the new epoch's whole history: offsets start again, and may repeat numbers seen before."""

    room: str
    old_epoch: str
    new_epoch: str


@dataclass(frozen=True, slots=True)
class BattleSide:
    room: str
    host: str
    score: int
    # At the end: the side's top gifters, [{user, name, coins}].
    top: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class BattleEvent:
    """A LIVE battle of a joined room: `state` is "invited", "started", "score" (a gift
    scored: lossy, the latest of a tick), "declined" or "ended". At the end `winner` is the
    winning room (None on a draw), `reason` "time", "early" or "forfeit" (`forfeit`: the room
    that ended its LIVE). Also the answer to `Client.invite`, `accept`, `decline` and
    `end_battle`."""

    battle: str
    state: str
    sides: tuple[BattleSide, ...]
    left_s: int | None = None
    ends_at: int | None = None
    winner: str | None = None
    draw: bool = False
    reason: str | None = None
    forfeit: str | None = None

    @classmethod
    def from_frame(cls, f: Frame) -> "BattleEvent":
        return cls(
            battle=f["battle"],
            state="score" if f["t"] == "battle_score" else f["state"],
            sides=tuple(
                BattleSide(s["room"], s["host"], s["score"], tuple(s.get("top", ())))
                for s in f["sides"]
            ),
            left_s=f.get("left_s"),
            ends_at=f.get("ends_at"),
            winner=f.get("winner"),
            draw=bool(f.get("draw", False)),
            reason=f.get("reason"),
            forfeit=f.get("forfeit"),
        )

    def score_of(self, room: str) -> int:
        return next((s.score for s in self.sides if s.room == room), 0)


Event = GiftEvent | CreditEvent | StreakEnded | RoomState | EpochChanged | BattleEvent
