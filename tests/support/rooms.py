"""Helpers of the live-room tests (tests/e2e/rooms/): frame predicates, gifts and their
answers, a room's sessions."""

from collections.abc import Callable, Sequence
from typing import Any

from .api import Api
from .frames import Client, Frame
from .users import User, bearer

# A deadline for conditions that settle in the background (presence expiry, pub/sub hops).
SETTLE_S = 15.0
# Tests gift as fast as they can; the gift rate limit has tests of its own.
UNLIMITED_GIFTS = {"GIFTSTREAM_GIFT_RATE_PER_S": "100000", "GIFTSTREAM_GIFT_BURST": "1000000"}


# -- helpers -----------------------------------------------------------------------------------


def streak_of(frame: Frame) -> dict[str, Any] | None:
    streak = frame.get("streak") if frame["t"] == "gift" else None
    return streak if isinstance(streak, dict) else None


def is_end(frame: Frame, streak_id: str | None = None) -> bool:
    streak = streak_of(frame)
    return (
        streak is not None
        and bool(streak["end"])
        and (streak_id is None or streak["id"] == streak_id)
    )


def of_streak(streak_id: str) -> Callable[[Frame], bool]:
    def match(frame: Frame) -> bool:
        streak = streak_of(frame)
        return streak is not None and streak["id"] == streak_id

    return match


def gift_event(event: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "gift" and f["event"] == event


def credit_event(event: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "credit" and f["event"] == event


def first_gift(frames: Sequence[Frame], event: str) -> Frame:
    """The live gift frame of `event` (not the copy that ends its streak)."""
    return next(f for f in frames if gift_event(event)(f) and not is_end(f))


async def send_gifts(client: Client, room: str, taps: Sequence[tuple[str, str, int]]) -> None:
    """Send gift frames (id, gift, count) back to back, without waiting for answers."""
    for rid, gift, count in taps:
        await client.send({"t": "gift", "id": rid, "room": room, "gift": gift, "count": count})


async def answers(client: Client, ids: Sequence[str], timeout: float = 30.0) -> dict[str, Frame]:
    """The `ack` or `error` of each request id, whatever comes in between."""
    wanted = set(ids)
    got: dict[str, Frame] = {}
    while wanted - set(got):
        frame, _ = await client.recv_until(
            lambda f: f["t"] in ("ack", "error") and f.get("id") in wanted, timeout
        )
        assert frame["id"] not in got, f"two answers to {frame['id']}"
        got[frame["id"]] = frame
    return got


async def acked(client: Client, room: str, gift: str, rid: str, count: int = 1) -> Frame:
    ack = await client.gift(room, gift, rid, count)
    assert ack["t"] == "ack", ack
    return ack


async def end_room(api: Api, host: User, room: str) -> Frame:
    r = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(host))
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def reopen(api: Api, host: User) -> Frame:
    r = await api.http.post("/v1/rooms", headers=bearer(host))
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def session(api: Api, room: str, session_id: int) -> Frame:
    r = await api.http.get(f"/v1/rooms/{room}/sessions/{session_id}")
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def until(
    client: Client,
    match: Callable[[Frame], bool],
    seen: list[Frame] | None = None,
    timeout: float = SETTLE_S,
) -> Frame:
    """The first frame matching; every frame received on the way (it too) is added to `seen`."""
    frame, before = await client.recv_until(match, timeout)
    if seen is not None:
        seen.extend([*before, frame])
    return frame


def room_goes(room: str, live: bool) -> Callable[[Frame], bool]:
    """The `room` frame that sets the room live or not (extras members only)."""
    return lambda f: f["t"] == "room" and f["room"] == room and f["live"] is live


def viewers_are(count: int) -> Callable[[Frame], bool]:
    """A `viewers` frame with `count` (extras members only)."""
    return lambda f: f["t"] == "viewers" and f["viewers"] == count


def presence_of(user: User, joined: bool) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "presence" and f["user"] == user.user and f["joined"] is joined


async def ping(client: Client) -> None:
    pong = await client.request({"t": "ping", "id": "barrier"}, "pong")
    assert pong["t"] == "pong", pong
