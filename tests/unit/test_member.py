"""A membership's exactly-once filter (realtime/member.py) and the frames it filters
(realtime/frames.py): offsets per history kind, the hold-back while replaying, the seam."""

from giftstream.realtime.frames import Encoded, batch, history_offset, single
from giftstream.realtime.member import Member
from giftstream.wire.codec import JSON, MSGPACK, Codec
from giftstream.wire.wsframe import server_frame
from support.room_kit import ROOM, Sink, credit, gift, live, member

# -- frames ------------------------------------------------------------------------------------


def test_a_batch_of_one_frame_is_that_frame_alone() -> None:
    encoded = batch(ROOM, [gift(4)])
    assert encoded.frame == gift(4)
    assert encoded.offsets == {"gift": (4, 4)}


def test_a_batch_keeps_its_frames_in_order_and_the_offset_range_of_each_history_kind() -> None:
    frames = [gift(7), credit(8), {"t": "leaderboard", "room": ROOM}, gift(3), credit(4)]
    encoded = batch(ROOM, frames)
    assert encoded.frame == {"t": "batch", "room": ROOM, "frames": frames}
    assert encoded.offsets == {"gift": (3, 7), "credit": (4, 8)}


def test_a_streak_end_and_live_only_frames_carry_no_history_offset() -> None:
    end = gift(5, streak={"id": "s", "repeat": 3, "end": True})
    assert history_offset(end) is None
    assert history_offset({"t": "viewers", "viewers": 3, "offset": 9}) is None
    assert history_offset(gift(5, streak={"id": "s", "repeat": 3, "end": False})) == ("gift", 5)
    assert batch(ROOM, [end, {"t": "viewers", "viewers": 1}]).offsets == {}


def test_a_frame_is_encoded_once_per_subprotocol_and_each_encoding_decodes_back() -> None:
    encoded = single(gift(1))
    as_msgpack, as_json = encoded.framed(MSGPACK), encoded.framed(JSON)
    assert encoded.framed(MSGPACK) is as_msgpack and encoded.framed(JSON) is as_json
    assert as_msgpack == server_frame(MSGPACK.encode(gift(1)))
    assert as_json == server_frame(JSON.encode(gift(1)))


# -- what a member wants -------------------------------------------------------------------------


def test_every_member_wants_gifts_the_host_credits_and_opted_in_members_the_extensions() -> None:
    kinds = ("gift", "credit", "session_summary", "leaderboard", "viewers", "presence", "batch")
    wanted = {
        (host, extras): {k for k in kinds if member(is_host=host, extras=extras).wants(k)}
        for host in (False, True)
        for extras in (False, True)
    }
    extensions = {"leaderboard", "viewers", "presence", "batch"}
    assert wanted[(False, False)] == {"gift"}
    assert wanted[(True, False)] == {"gift", "credit"}
    assert wanted[(False, True)] == {"gift"} | extensions
    assert wanted[(True, True)] == {"gift", "credit", "session_summary"} | extensions


# -- exactly once --------------------------------------------------------------------------------


def test_live_frames_wait_while_the_member_replays_and_follow_the_replay_in_order() -> None:
    sink = Sink()
    m = member(is_host=True, sink=sink)
    m.resume_from(2)
    m.deliver([(single(gift(5)), False), (single(credit(6)), True)])
    assert sink.messages == []
    m.replay(single(gift(3)), lossless=True)
    m.replay(single(credit(4)), lossless=True)
    assert [f["offset"] for f in sink.messages] == [3, 4]
    m.finish_replay()
    assert [f["offset"] for f in sink.messages] == [3, 4, 5, 6]
    assert sink.classes == [True, True, False, True]
    assert len(sink.writes[-1]) == 2, "the held-back frames go in one write"


def test_an_event_at_or_below_the_last_offset_of_its_kind_is_dropped() -> None:
    sink = Sink()
    m = live(member(is_host=True, sink=sink), 4)
    m.deliver([(single(gift(3)), False), (single(credit(4)), True), (single(gift(5)), False)])
    m.replay(single(gift(5)), lossless=True)
    assert [f["offset"] for f in sink.messages] == [5]
    assert (m.last_offsets, m.last_offset) == ({"gift": 5, "credit": 4}, 4)


def test_offsets_are_counted_per_kind() -> None:
    sink = Sink()
    m = live(member(is_host=True, sink=sink))
    m.deliver([(single(credit(9)), True)])
    m.deliver([(single(gift(8)), False)])
    assert [f["offset"] for f in sink.messages] == [9, 8]


def test_at_the_seam_a_batch_partly_delivered_is_sent_as_the_rest_only() -> None:
    sink = Sink()
    m = live(member(is_host=True, extras=True, sink=sink), 4)
    frames = [gift(3), credit(4), {"t": "leaderboard", "room": ROOM}, gift(5), credit(6)]
    m.deliver([(batch(ROOM, frames), True)])
    (sent,) = sink.messages
    assert sent["t"] == "batch"
    assert sent["frames"] == [{"t": "leaderboard", "room": ROOM}, gift(5), credit(6)]
    m.deliver([(batch(ROOM, frames[:2]), True)])
    assert len(sink.messages) == 1, "a batch delivered before in full is dropped"


def test_live_only_frames_are_never_taken_for_duplicates() -> None:
    sink = Sink()
    m = live(member(extras=True, sink=sink), 10)
    end = gift(3, streak={"id": "s", "repeat": 2, "end": True})
    m.deliver([(single(end), False), (single({"t": "viewers", "room": ROOM, "viewers": 2}), False)])
    assert [f["t"] for f in sink.messages] == ["gift", "viewers"]


def test_a_member_gets_its_own_subprotocol() -> None:
    sink = Sink()
    codec: Codec = JSON
    m = Member(ROOM, "u", "U", False, codec, sink)
    live(m).deliver([(single(gift(1)), False)])
    assert sink.writes == [[(single(gift(1)).framed(JSON), False)]]


def test_encoded_frames_are_shared_between_members() -> None:
    one = single(gift(1))
    sinks = [Sink(), Sink()]
    for sink in sinks:
        live(member(sink=sink)).deliver([(one, False)])
    assert sinks[0].writes[0][0][0] is sinks[1].writes[0][0][0]
    assert isinstance(one, Encoded)


def test_a_member_resumes_after_an_offset_of_the_rooms_epoch_and_from_the_start_after_a_reset() -> (
    None
):
    same, other = member(is_host=True), member(is_host=True)
    assert same.resume_after("ep1", 7, room_epoch="ep1") == 7
    assert same.last_offsets == {"gift": 7, "credit": 7}
    assert other.resume_after("old", 7, room_epoch="ep1") == 0
    assert other.last_offsets == {"gift": 0, "credit": 0}
