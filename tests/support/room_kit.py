"""Helpers of the room core's unit tests: a member's send buffer that keeps what it is given, and
the frames of a room."""

from typing import Any

import msgpack

from giftstream.realtime.member import Member
from giftstream.wire.codec import MSGPACK

ROOM = "r1"


class Sink:
    """A member's send buffer that keeps every message, decoded (msgpack only)."""

    def __init__(self) -> None:
        self.writes: list[list[tuple[bytes, bool]]] = []
        # Whether lossy frames are taken (False: as an Outbound more than half full).
        self.lossy_kept = True

    def keeps_lossy(self) -> bool:
        return self.lossy_kept

    def put(self, frame: bytes, lossless: bool) -> None:
        self.put_all([(frame, lossless)])

    def put_all(self, frames: list[tuple[bytes, bool]]) -> None:
        if frames:  # as Outbound: nothing to send, no write
            self.writes.append(frames)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [_decoded(m) for write in self.writes for m, _ in write]

    @property
    def classes(self) -> list[bool]:
        return [lossless for write in self.writes for _, lossless in write]


def _decoded(message: bytes) -> dict[str, Any]:
    # A server frame's header: 2 bytes, then a 16- or 64-bit length for long payloads.
    start = {126: 4, 127: 10}.get(message[1], 2)
    frame: dict[str, Any] = msgpack.unpackb(message[start:], raw=False)
    return frame


def member(
    *, is_host: bool = False, extras: bool = False, sink: Sink | None = None, user: str = ""
) -> Member:
    return Member(
        room=ROOM,
        user=user or ("host" if is_host else "viewer"),
        name="Name",
        is_host=is_host,
        codec=MSGPACK,
        outbound=sink if sink is not None else Sink(),
        extras=extras,
    )


def gift(offset: int, **extra: Any) -> dict[str, Any]:
    return {"t": "gift", "room": ROOM, "event": f"e{offset}", "offset": offset, **extra}


def credit(offset: int) -> dict[str, Any]:
    return {"t": "credit", "room": ROOM, "event": f"e{offset - 1}", "offset": offset}


def live(m: Member, offset: int = 0) -> Member:
    m.resume_from(offset)
    m.finish_replay()
    return m


def flattened(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames of `messages`, a `batch`'s in its place."""
    return [f for m in messages for f in (m["frames"] if m["t"] == "batch" else [m])]
