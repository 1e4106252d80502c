"""The sans-I/O room core (realtime/room.py): members, the tick's merge of lossy frames, streaks
opened, extended and closed, lossless order, offsets across a lost link — fed with frames and a
clock, with no server. The property tests play any interleaving of gifts, ticks, timeouts and
lost links against a model of the store's gift Function and check what each viewer ends up with.
"""

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from giftstream import realtime
from giftstream.realtime.member import Member
from giftstream.realtime.room import Delivery, Room
from support.room_kit import ROOM, Sink, credit, flattened, gift, live, member

TIMEOUT_MS = 3_000
SMALL_ROOM = 5
REGION = "eu"


def new_room(**overrides: Any) -> Room:
    fields: dict[str, Any] = {
        "id": ROOM,
        "host": "host",
        "live": True,
        "receives": True,
        "region": REGION,
        "streak_timeout_ms": TIMEOUT_MS,
        "presence_frames_max_viewers": SMALL_ROOM,
    }
    return Room(**(fields | overrides))


def perform(deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        delivery.perform()


def joined(room: Room, **kind: Any) -> tuple[Member, Sink]:
    sink = Sink()
    m = live(member(sink=sink, **kind))
    room.members.add(m)
    return m, sink


def tap(offset: int, streak: str, repeat: int, sender: str = "alice", name: str = "rose") -> Any:
    s = {"id": streak, "repeat": repeat, "end": False}
    return gift(offset, streak=s, gift=name, **{"from": sender})


def single_gift(offset: int, sender: str = "alice") -> dict[str, Any]:
    return gift(offset, gift="castle", **{"from": sender})


def streaks_seen(sink: Sink) -> list[tuple[str, int, bool]]:
    return [
        (f["streak"]["id"], f["streak"]["repeat"], f["streak"]["end"])
        for f in flattened(sink.messages)
        if f["t"] == "gift" and "streak" in f
    ]


# -- the tick ------------------------------------------------------------------------------------


def test_the_first_message_of_a_quiet_tick_goes_at_once_and_later_ones_wait_for_the_tick() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([single_gift(1)], 0))
    assert [f["offset"] for f in sink.messages] == [1], "a lone gift goes alone, at once"
    perform(room.on_frames([single_gift(3)], 10))
    perform(room.on_frames([single_gift(5)], 20))
    assert len(sink.messages) == 1
    perform(room.tick(50))
    assert [f["offset"] for f in flattened(sink.messages)] == [1, 3, 5]
    assert sink.messages[1]["t"] == "batch", "what waited goes as one message, for v1 too"
    assert len(sink.writes) == 2


def test_a_tick_that_sent_keeps_the_next_tick_closed() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([single_gift(1)], 0))
    perform(room.on_frames([single_gift(3)], 10))
    perform(room.tick(50))
    perform(room.on_frames([single_gift(5)], 60))
    assert len(sink.messages) == 2, "the tick sent: the next gift waits for the next tick"
    perform(room.tick(100))
    assert [f["offset"] for f in flattened(sink.messages)] == [1, 3, 5]
    assert len(sink.messages) == 3


def test_a_tick_with_nothing_waiting_opens_the_next_tick_for_an_immediate_send() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([single_gift(1)], 0))
    perform(room.tick(50))
    perform(room.tick(100))
    perform(room.on_frames([single_gift(3)], 110))
    assert [f["offset"] for f in sink.messages] == [1, 3]


def test_a_newer_streak_update_replaces_the_older_and_takes_its_place_at_the_end() -> None:
    room = new_room()
    _, sink = joined(room, extras=True)
    perform(room.on_frames([single_gift(1, sender="bob")], 0))
    perform(room.on_frames([tap(3, "s", 1)], 10))
    perform(room.on_frames([single_gift(5, sender="bob")], 20))
    perform(room.on_frames([tap(7, "s", 2)], 30))
    perform(room.tick(50))
    (_, tick) = sink.messages
    assert [(f["offset"], f.get("streak", {}).get("repeat")) for f in tick["frames"]] == [
        (5, None),
        (7, 2),
    ]


def test_only_the_latest_viewer_count_and_leaderboard_of_a_tick_are_sent() -> None:
    room = new_room()
    _, sink = joined(room, extras=True)
    perform(room.on_frames([single_gift(1)], 0))
    for n in range(3):
        board = {"t": "leaderboard", "room": ROOM, "top": [n]}
        perform(room.on_frames([{"t": "viewers", "room": ROOM, "viewers": n}, board], 10 + n))
    perform(room.tick(50))
    assert flattened(sink.messages[1:]) == [
        {"t": "viewers", "room": ROOM, "viewers": 2},
        {"t": "leaderboard", "room": ROOM, "top": [2]},
    ]
    assert room.viewers == 2


def test_lossless_frames_are_never_merged_and_keep_their_order() -> None:
    room = new_room()
    _, sink = joined(room, is_host=True)
    perform(room.on_frames([single_gift(1), credit(2)], 0))
    for offset in (4, 6, 8):
        perform(room.on_frames([single_gift(offset - 1), credit(offset)], offset))
    perform(room.tick(50))
    credits = [f["offset"] for f in flattened(sink.messages) if f["t"] == "credit"]
    assert credits == [2, 4, 6, 8]
    assert sink.classes == [True, True], "a message holding a credit is lossless"


def test_a_member_behind_gets_a_mixed_message_as_its_lossless_frames_alone() -> None:
    room = new_room()
    _, sink = joined(room, is_host=True)
    _, viewer = joined(room)
    sink.lossy_kept = viewer.lossy_kept = False
    perform(room.on_frames([single_gift(1), credit(2)], 0))
    assert sink.messages == [credit(2)]
    assert sink.classes == [True]
    assert [f["offset"] for f in viewer.messages] == [1], "all lossy: its buffer decides"
    sink.lossy_kept = True
    perform(room.tick(50))
    perform(room.tick(100))
    perform(room.on_frames([single_gift(3), credit(4)], 110))
    assert [f["offset"] for f in flattened(sink.messages)] == [2, 3, 4]


def test_every_member_gets_one_message_v1_members_a_batch_of_v1_frames() -> None:
    room = new_room()
    sinks = {
        kind: joined(room, is_host=kind[0], extras=kind[1])[1]
        for kind in [(False, False), (True, False), (False, True), (True, True)]
    }
    board = {"t": "leaderboard", "room": ROOM, "top": []}
    perform(room.on_frames([single_gift(1), credit(2), board], 0))
    assert [f["t"] for f in sinks[(False, False)].messages] == ["gift"]
    (batch_of_v1_host,) = sinks[(True, False)].messages
    assert [f["t"] for f in batch_of_v1_host["frames"]] == ["gift", "credit"]
    assert sinks[(True, False)].classes == [True]
    (batch_of_viewer,) = sinks[(False, True)].messages
    assert [f["t"] for f in batch_of_viewer["frames"]] == ["gift", "leaderboard"]
    assert sinks[(False, True)].classes == [False]
    (batch_of_host,) = sinks[(True, True)].messages
    assert [f["t"] for f in batch_of_host["frames"]] == ["gift", "credit", "leaderboard"]
    assert sinks[(True, True)].classes == [True]


def test_members_of_one_kind_share_one_encoding_of_each_frame() -> None:
    room = new_room()
    a, b = Sink(), Sink()
    for sink in (a, b):
        room.members.add(live(member(sink=sink, extras=True)))
    perform(room.on_frames([single_gift(1), {"t": "viewers", "room": ROOM, "viewers": 1}], 0))
    assert a.writes[0][0][0] is b.writes[0][0][0]


# -- streaks -------------------------------------------------------------------------------------


def test_a_streak_ends_when_its_sender_switches_gift_with_its_last_count() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([tap(1, "s1", 1)], 0))
    perform(room.tick(50))
    perform(room.on_frames([tap(3, "s1", 4)], 60))
    perform(room.tick(100))
    perform(room.tick(150))
    perform(room.on_frames([tap(5, "s2", 1, name="heart")], 160))
    perform(room.tick(200))
    assert streaks_seen(sink) == [
        ("s1", 1, False),
        ("s1", 4, False),
        ("s1", 4, True),
        ("s2", 1, False),
    ]


def test_a_single_gift_ends_its_senders_streak_only() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([tap(1, "a", 2, sender="alice")], 0))
    perform(room.on_frames([tap(3, "b", 1, sender="bob")], 10))
    perform(room.on_frames([single_gift(5, sender="alice")], 20))
    perform(room.tick(50))
    assert ("a", 2, True) in streaks_seen(sink)
    assert ("b", 1, True) not in streaks_seen(sink)
    assert len(room.book) == 1


def test_a_streak_ends_at_the_first_tick_after_its_timeout_and_not_before() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([tap(1, "s", 3)], 1_000))
    perform(room.tick(1_000 + TIMEOUT_MS - 1))
    assert streaks_seen(sink) == [("s", 3, False)]
    perform(room.tick(1_000 + TIMEOUT_MS))
    assert streaks_seen(sink) == [("s", 3, False), ("s", 3, True)]
    (end,) = [f for f in sink.messages if f["streak"]["end"]]
    assert end["offset"] == 1 and end["from"] == "alice", "the end repeats the last tap"


def test_an_end_frame_from_the_room_is_shown_and_opens_no_streak() -> None:
    room = new_room()
    _, sink = joined(room)
    end = gift(1, streak={"id": "s", "repeat": 2, "end": True}, gift="rose", **{"from": "al"})
    perform(room.on_frames([end], 0))
    assert len(room.book) == 0
    assert streaks_seen(sink) == [("s", 2, True)]


def test_a_streak_end_replaces_its_waiting_update_in_the_tick() -> None:
    room = new_room()
    _, sink = joined(room)
    perform(room.on_frames([single_gift(1, sender="bob")], 0))
    perform(room.on_frames([tap(3, "s", 5)], 10))
    perform(room.on_frames([single_gift(5)], 20))
    perform(room.tick(50))
    assert streaks_seen(sink) == [("s", 5, True)]


# -- the room's state, broadcasts, presence --------------------------------------------------------


def test_room_frames_set_whether_the_room_is_live() -> None:
    room = new_room(live=False)
    perform(room.on_frames([{"t": "room", "room": ROOM, "live": True}], 0))
    assert room.live
    perform(room.on_frames([{"t": "room", "room": ROOM, "live": False, "session": 1}], 0))
    assert not room.live


def test_a_broadcast_shows_in_the_live_rooms_of_its_region_only() -> None:
    frame = {"t": "broadcast", "event": "e1", "region": REGION}
    for room, shown in [
        (new_room(), True),
        (new_room(live=False), False),
        (new_room(region="us"), False),
    ]:
        _, sink = joined(room, extras=True)
        perform(room.on_broadcast(frame, 0))
        assert sink.messages == ([frame] if shown else [])


def test_a_small_room_shows_each_join_and_leave_and_a_big_one_counts_at_the_tick() -> None:
    small, big = new_room(viewers=SMALL_ROOM), new_room(viewers=SMALL_ROOM + 1)
    m = member(user="ann")
    small.presence_due = big.presence_due = False
    assert small.presence_changed(m, joined=True) == {
        "t": "presence",
        "room": ROOM,
        "user": "ann",
        "name": "Name",
        "joined": True,
    }
    assert not small.presence_due
    assert big.presence_changed(m, joined=False) is None
    assert big.presence_due_at(0)


def test_presence_is_due_at_its_refresh_or_again_after_a_failed_write() -> None:
    room = new_room()
    room.members |= {member(is_host=True), member(user="a"), member(user="b")}
    assert room.presence_due_at(0)
    assert room.presence_sent(1_000, 5_000) == 2, "the host is not one of its own viewers"
    assert not room.presence_due_at(5_999)
    assert room.presence_due_at(6_000)
    room.presence_sent(6_000, 5_000)
    room.presence_failed()
    assert room.presence_due_at(6_000)


# -- offsets across a lost link --------------------------------------------------------------------


def test_cut_off_members_hold_back_live_frames_until_the_replay_fills_the_gap() -> None:
    room = new_room()
    host, sink = joined(room, is_host=True)
    perform(room.on_frames([single_gift(1), credit(2)], 0))
    assert room.cut_off() == [host]
    assert room.cut_off() == [], "a member already cut off is not counted twice"
    # (3, 4) are lost with the link; (5, 6) arrive once it is back, before the replay.
    perform(room.tick(50))
    perform(room.on_frames([single_gift(5), credit(6)], 60))
    history = [single_gift(1), credit(2), single_gift(3), credit(4), single_gift(5), credit(6)]
    since = host.last_offset
    perform(room.replay([host], [f for f in history if f["offset"] > since]))
    host.finish_replay()
    assert [f["offset"] for f in flattened(sink.messages)] == [1, 2, 3, 4, 5, 6]


def test_a_replay_gives_each_member_only_the_kinds_it_wants_the_history_being_lossless() -> None:
    room = new_room()
    viewer, viewer_sink = joined(room)
    host, host_sink = joined(room, is_host=True)
    room.cut_off()
    deliveries = room.replay([viewer, host], [single_gift(1), credit(2)])
    assert {d.member: [e.frame["t"] for e, _ in d.events] for d in deliveries} == {
        viewer: ["gift"],
        host: ["gift", "credit"],
    }
    assert all(d.replay for d in deliveries)
    perform(deliveries)
    assert host_sink.classes == [False, True]
    assert [f["t"] for f in viewer_sink.messages] == ["gift"]


def test_a_member_resumed_at_an_offset_gets_only_what_follows_it() -> None:
    room = new_room()
    sink = Sink()
    m = member(sink=sink, is_host=True)
    m.resume_from(4)
    room.members.add(m)
    perform(room.on_frames([single_gift(5), credit(6)], 0))
    perform(room.replay([m], [single_gift(3), credit(4), single_gift(5), credit(6)]))
    m.finish_replay()
    assert [f["offset"] for f in sink.messages] == [5, 6]


# -- any interleaving ----------------------------------------------------------------------------

SENDERS = ("alice", "bob", "carol")
# Two streakable gifts and one that is not (it interrupts its sender's streak).
GIFTS = ("rose", "heart", "castle")
KINDS = [(False, False), (True, False), (False, True), (True, True)]

tap_action = st.tuples(
    st.just("tap"), st.sampled_from(SENDERS), st.sampled_from(GIFTS), st.integers(1, 5)
)
wait_action = st.tuples(st.just("wait"), st.integers(0, 2 * TIMEOUT_MS))
viewers_action = st.tuples(st.just("viewers"), st.integers(0, 500))
link_action = st.sampled_from([("lose",), ("restore",)])
# Members' buffers filling (past half: lossy frames no longer taken) and emptying.
press_action = st.tuples(st.just("press"), st.sampled_from(KINDS), st.booleans())


@dataclass
class World:
    """A room on one worker, fed as the store's gift Function (gifts.lua) would feed it: it gives
    each tap its streak (continued while the same gift comes within the timeout) and its offsets,
    keeps the history, and publishes — or not, while the link is lost."""

    room: Room = field(default_factory=new_room)
    now: int = 0
    offset: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    open: dict[str, tuple[str, str, int, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    singles: list[str] = field(default_factory=list)
    viewers: int | None = None
    cut_off: list[Member] | None = None
    members: dict[tuple[bool, bool], tuple[Member, Sink]] = field(default_factory=dict)
    # Per member, its messages before the last tick, and the most it got from a tick (its own
    # message included) to the next: a tick's message, or the quiet tick's first message after.
    marks: dict[tuple[bool, bool], int] = field(default_factory=dict)
    most_per_tick: int = 0
    # The members whose buffers were ever too full for lossy frames.
    pressed: set[tuple[bool, bool]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for host, extras in KINDS:
            self.members[(host, extras)] = joined(self.room, is_host=host, extras=extras)

    def play(self, action: tuple[Any, ...]) -> None:
        if action[0] == "tap":
            self.tap(action[1], action[2], action[3])
        elif action[0] == "wait":
            self.now += action[1]
            self.tick()
        elif action[0] == "viewers":
            self.viewers = action[1]
            self.publish([{"t": "viewers", "room": ROOM, "viewers": action[1]}])
        elif action[0] == "lose" and self.cut_off is None:
            self.cut_off = self.room.cut_off()
        elif action[0] == "restore":
            self.restore()
        elif action[0] == "press":
            self.members[action[1]][1].lossy_kept = action[2]
            self.pressed |= set() if action[2] else {action[1]}

    def tap(self, sender: str, name: str, count: int) -> None:
        self.offset += 2
        event = f"e{self.offset}"
        frame: dict[str, Any] = single_gift(self.offset - 1, sender) | {
            "gift": name,
            "event": event,
        }
        previous = self.open.pop(sender, None)
        if name != "castle":
            streak, repeat = event, count
            # The Function's window; the boundary itself races the room's tick, as in life.
            if previous and previous[1] == name and self.now - previous[3] < TIMEOUT_MS:
                streak, repeat = previous[0], previous[2] + count
            self.open[sender] = (streak, name, repeat, self.now)
            self.totals[streak] = repeat
            frame["streak"] = {"id": streak, "repeat": repeat, "end": False}
        else:
            self.singles.append(event)
        frames = [frame, credit(self.offset) | {"event": event}]
        self.history += frames
        if count % 2:
            frames.append({"t": "leaderboard", "room": ROOM, "top": [sender]})
        self.publish(frames)

    def tick(self) -> None:
        for kind, (_, sink) in self.members.items():
            got = len(sink.messages) - self.marks.get(kind, 0)
            self.most_per_tick = max(self.most_per_tick, got)
            self.marks[kind] = len(sink.messages)
        perform(self.room.tick(self.now))

    def publish(self, frames: list[dict[str, Any]]) -> None:
        if self.cut_off is None:
            perform(self.room.on_frames(frames, self.now))

    def restore(self) -> None:
        if self.cut_off is None:
            return
        members, self.cut_off = self.cut_off, None
        if members:
            since = min(m.last_offset for m in members)
            perform(self.room.replay(members, [f for f in self.history if f["offset"] > since]))
        for m in members:
            m.finish_replay()

    def finish(self) -> None:
        """Every streak falls quiet and the last tick goes out."""
        self.restore()
        self.now += TIMEOUT_MS
        self.tick()
        self.tick()

    def check_lossless(self) -> None:
        """Each member saw each credit once, in order (the host only), and each history event
        at most once, in order; a message with a lossless frame was sent as lossless."""
        credits = [f["offset"] for f in self.history if f["t"] == "credit"]
        for (host, extras), (_, sink) in self.members.items():
            frames = flattened(sink.messages)
            assert [f["offset"] for f in frames if f["t"] == "credit"] == (credits if host else [])
            gifts = [f["offset"] for f in frames if f["t"] == "gift" and not _is_end(f)]
            assert gifts == sorted(set(gifts))
            if (host, extras) not in self.pressed:  # else its buffer dropped lossy frames
                assert [
                    s for f in frames if f["t"] == "gift" and (s := f["event"]) in self.singles
                ] == (self.singles), "a gift that merges with nothing is never dropped"
            for message, lossless in zip(sink.messages, sink.classes, strict=True):
                # (The rest of a batch at a seam keeps the batch's class, lossless or not.)
                assert lossless or not any(f["t"] == "credit" for f in flattened([message]))
            if not extras:
                assert {f["t"] for f in frames} <= {"gift", "credit"}, "protocol v1 frames only"

    def check_streaks(self) -> None:
        """Each member's last frame of each streak is its end, with the streak's true total;
        one end per streak; the latest viewer count shown."""
        for (_, extras), (_, sink) in self.members.items():
            last: dict[str, dict[str, Any]] = {}
            ends: dict[str, int] = {}
            for f in flattened(sink.messages):
                if f["t"] == "gift" and "streak" in f:
                    last[f["streak"]["id"]] = f["streak"]
                    ends[f["streak"]["id"]] = ends.get(f["streak"]["id"], 0) + _is_end(f)
            assert last == {s: {"id": s, "repeat": n, "end": True} for s, n in self.totals.items()}
            assert set(ends.values()) <= {1}
            shown = [f["viewers"] for f in flattened(sink.messages) if f["t"] == "viewers"]
            if extras and self.viewers is not None:
                assert shown[-1] == self.viewers


def _is_end(frame: dict[str, Any]) -> bool:
    return bool(frame.get("streak", {}).get("end"))


@settings(max_examples=150)
@given(st.lists(st.one_of(tap_action, tap_action, wait_action, viewers_action), max_size=50))
def test_any_interleaving_keeps_every_streak_total_and_every_lossless_frame(
    actions: list[tuple[Any, ...]],
) -> None:
    world = World()
    for action in actions:
        world.play(action)
    world.finish()
    world.check_lossless()
    world.check_streaks()
    assert world.most_per_tick <= 1, "at most one message per member per tick"


@settings(max_examples=150)
@given(
    st.lists(st.one_of(tap_action, tap_action, wait_action, link_action, press_action), max_size=50)
)
def test_across_lost_links_and_full_buffers_every_lossless_frame_arrives_once_and_in_order(
    actions: list[tuple[Any, ...]],
) -> None:
    world = World()
    for action in actions:
        world.play(action)
    world.finish()
    world.check_lossless()


def test_the_realtime_layer_imports_no_store_client() -> None:
    """Pub/sub and its recovery live in the store layer (store/subscriber.py)."""
    folder = Path(realtime.__file__).parent
    imported = {
        (path.name, name.split(".")[0])
        for path in folder.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        for name in _imported(node)
    }
    assert {(module, top) for module, top in imported if top == "redis"} == set()
    assert ("room.py", "giftstream") in imported


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module is not None:
        return [node.module]
    return []
