"""A live room as one worker sees it, without I/O: its members, the frames waiting for the tick,
its open streaks, and when its viewer count is due.

Sans-I/O, in the manner of the websockets library's protocol layer: the hub feeds a `Room` the
room's messages, its ticks and the clock (`now_ms`, monotonic, passed in), and performs what it
returns — `Delivery`s, the frames of one member in one write — and the presence writes it asks
for. Nothing here awaits, reads a clock, or touches the store or a socket.

Lossless frames (credits, room state, session summaries, chests) are never merged nor dropped;
lossy ones (gift animations, streak updates, viewer counts, leaderboards, broadcast announcements)
are merged per tick — the newest streak update replaces the older. Each member gets at most one
message per tick (`coalesce_tick_ms`), a lone frame or a `batch`, whatever the gift rate: a
storm costs each viewer a bounded number of messages per second. Each message is encoded once,
whatever the number of members.
"""

from dataclasses import dataclass, field
from typing import Any

from giftstream.domain.streaks import StreakBook, StreakTap
from giftstream.realtime.frames import Encoded, batch, single
from giftstream.realtime.member import Member

# Lossless frames: never merged, never dropped for a slow client.
LOSSLESS = frozenset({"credit", "room", "session_summary", "chest", "chest_result", "battle"})

Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Frames for one member, each with whether it is lossless, in one write. A `replay` is
    history, sent even while the member holds back its live frames."""

    member: Member
    events: list[tuple[Encoded, bool]]
    replay: bool = False

    def perform(self) -> None:
        """Hand the frames to the member's exactly-once filter, and so to its send buffer."""
        if not self.replay:
            self.member.deliver(self.events)
            return
        for event, lossless in self.events:
            self.member.replay(event, lossless)


def merge_key(frame: Frame) -> str:
    """Frames of one tick with the same key merge: the newer replaces the older."""
    kind = str(frame.get("t"))
    if kind in LOSSLESS:
        ident = frame.get("offset") or frame.get("chest") or frame.get("session")
        if kind == "battle":  # each state change of a battle is its own frame
            ident = f"{frame.get('battle')}:{frame.get('state')}"
        return f"{kind}:{ident}:{frame.get('live', '')}"
    if kind == "gift":
        streak = frame.get("streak")
        return f"streak:{streak['id']}" if isinstance(streak, dict) else f"gift:{frame['event']}"
    if kind == "broadcast":
        return f"broadcast:{frame['event']}"
    if kind == "presence":
        return f"presence:{frame['user']}"
    if kind == "battle_score":
        return f"battle_score:{frame['battle']}"
    return kind  # viewers, leaderboard: only the latest matters


@dataclass(eq=False)
class Room:
    id: str
    host: str
    live: bool
    receives: bool
    region: str
    streak_timeout_ms: int
    # Rooms with at most this many viewers show each join and leave (a `presence` frame).
    presence_frames_max_viewers: int
    viewers: int = 0
    members: set[Member] = field(default_factory=set)
    # Frames waiting for the tick, in order, by merge key (lossless frames have keys of their
    # own).
    queued: dict[str, Frame] = field(default_factory=dict)
    # Whether frames went out in this tick: the first message of a quiet tick goes at once (a
    # quiet room sees every frame without delay), later ones wait for the tick.
    sent_this_tick: bool = False
    presence_due: bool = True
    presence_refresh_ms: int = 0
    book: StreakBook = field(init=False)

    def __post_init__(self) -> None:
        self.book = StreakBook(self.streak_timeout_ms)

    # -- members -----------------------------------------------------------------------------

    @property
    def watching(self) -> int:
        """This worker's share of the viewer count: the host is not one of its own viewers."""
        return sum(1 for m in self.members if not m.is_host)

    def presence_changed(self, member: Member, joined: bool) -> Frame | None:
        """After `member` joined or left: in a small room, the `presence` frame to publish once
        the count is written (now); None in a big room, whose count is due at the next tick and
        which shows no frame per join."""
        if self.viewers > self.presence_frames_max_viewers:
            self.presence_due = True
            return None
        return {
            "t": "presence",
            "room": self.id,
            "user": member.user,
            "name": member.name,
            "joined": joined,
        }

    def presence_due_at(self, now_ms: int) -> bool:
        return self.presence_due or now_ms >= self.presence_refresh_ms

    def presence_sent(self, now_ms: int, refresh_ms: int) -> int:
        """A write of this worker's count is starting: the count to write. The next one is due
        in `refresh_ms`, or at the next tick if this one fails (`presence_failed`)."""
        self.presence_due = False
        self.presence_refresh_ms = now_ms + refresh_ms
        return self.watching

    def presence_failed(self) -> None:
        self.presence_due = True  # a count is approximate: try again on the next tick

    # -- live frames -------------------------------------------------------------------------

    def on_frames(self, frames: list[Frame], now_ms: int) -> list[Delivery]:
        """One message of the room (e.g. a gift, its credit and the leaderboard): sent at once
        in a quiet tick, else queued for the tick, in order, lossy frames merged."""
        out: list[Delivery] = []
        for frame in frames:
            kind = frame.get("t")
            if kind == "room":
                self.live = bool(frame.get("live"))
            elif kind == "viewers":
                self.viewers = int(frame["viewers"])
            elif kind == "gift":
                out += self._track_streak(frame, now_ms)
        if not self.sent_this_tick and not self.queued:
            self.sent_this_tick = True
            return out + self._send(frames)
        self._queue(frames)
        return out

    def on_broadcast(self, frame: Frame, now_ms: int) -> list[Delivery]:
        """A broadcast gift announcement: shown in the live rooms of its region."""
        if not self.live or self.region != frame.get("region"):
            return []
        return self.on_frames([frame], now_ms)

    def tick(self, now_ms: int) -> list[Delivery]:
        """Send what waited, with the closing frames of the streaks that fell quiet, as one
        message per member; or, with nothing waiting, open the next tick for an immediate
        send. A tick that sent keeps the next one closed: each member gets at most one message
        per tick, however many gifts come."""
        if len(self.book):
            self._queue([_closing(tap) for tap in self.book.expire(now_ms)])
        if not self.queued:
            self.sent_this_tick = False
            return []
        self.sent_this_tick = True
        frames = list(self.queued.values())
        self.queued.clear()
        return self._send(frames)

    def _queue(self, frames: list[Frame]) -> None:
        for frame in frames:
            key = merge_key(frame)
            # A newer frame replaces the one it merges with, and takes its place at the end.
            self.queued.pop(key, None)
            self.queued[key] = frame

    def _send(self, frames: list[Frame]) -> list[Delivery]:
        """One message per member: its one frame alone, or one `batch` of its frames (protocol
        v1 allows batches: members that did not opt in get theirs of v1 frames). What a member
        gets depends only on whether it is the host and opted in, so each message is encoded
        once."""
        chosen: dict[tuple[bool, bool], list[tuple[Encoded, bool]]] = {}
        out: list[Delivery] = []
        for member in self.members:
            kind = (member.extras, member.is_host)
            mine = chosen.get(kind)
            if mine is None:
                mine = chosen[kind] = self._message(member, frames)
            if mine:
                out.append(Delivery(member, mine))
        return out

    def _message(self, member: Member, frames: list[Frame]) -> list[tuple[Encoded, bool]]:
        """`member`'s message of `frames` (none when it wants none), lossless when a frame in it
        is; a message mixing both classes carries its lossless frames alone too, for a member
        too far behind to take the lossy ones."""
        wanted = [f for f in frames if member.wants(f.get("t"))]
        if not wanted:
            return []
        lossless = [f for f in wanted if f.get("t") in LOSSLESS]
        message = batch(self.id, wanted)
        if lossless and len(lossless) < len(wanted):
            message.essential = batch(self.id, lossless)
        return [(message, bool(lossless))]

    # -- streaks -----------------------------------------------------------------------------

    def _track_streak(self, frame: Frame, now_ms: int) -> list[Delivery]:
        streak = frame.get("streak")
        sender = str(frame["from"])
        if isinstance(streak, dict) and streak.get("end"):
            return []
        if not isinstance(streak, dict):  # a single gift interrupts the sender's streak
            return self._end_streaks(self.book.close_sender(sender), now_ms)
        tap = StreakTap(
            streak_id=str(streak["id"]),
            sender=sender,
            gift=str(frame["gift"]),
            repeat=int(streak["repeat"]),
            seen_ms=now_ms,
            event=frame,
        )
        return self._end_streaks(self.book.observe(tap), now_ms)

    def _end_streaks(self, ended: list[StreakTap], now_ms: int) -> list[Delivery]:
        out: list[Delivery] = []
        for tap in ended:
            out += self.on_frames([_closing(tap)], now_ms)
        return out

    # -- recovery ----------------------------------------------------------------------------

    def cut_off(self) -> list[Member]:
        """The pub/sub link was lost: the members that must now be replayed the room's history.
        Until then each holds back its live frames, so that the replay fills the gap in order
        before anything newer is delivered."""
        members = [m for m in self.members if not m.replaying]
        for member in members:
            member.replaying = True
        return members

    def replay(self, members: list[Member], history: list[Frame]) -> list[Delivery]:
        """The history each of `members` may have missed (each drops what it already had)."""
        events = [(single(f), f.get("t") in LOSSLESS) for f in history]
        out: list[Delivery] = []
        for member in members:
            mine = [(e, lossless) for e, lossless in events if member.wants(e.frame.get("t"))]
            if mine:
                out.append(Delivery(member, mine, replay=True))
        return out


def _closing(tap: StreakTap) -> Frame:
    """An ended streak's closing frame: its last tap, with `end: true`."""
    last = dict(tap.event)
    last["streak"] = {"id": tap.streak_id, "repeat": tap.repeat, "end": True}
    return last
