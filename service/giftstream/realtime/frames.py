"""Frames encoded and framed at most once per subprotocol, however many members receive them."""

from typing import Any

from giftstream.wire.codec import Codec, Format, encode_json, encode_msgpack
from giftstream.wire.wsframe import server_frame

# Kinds of the room history: delivered once each, in offset order, per kind.
HISTORY_KINDS = ("gift", "credit")


class Encoded:
    """One frame, or a `batch` of frames. `offsets` gives, per history kind, the lowest and the
    highest offset inside (a live-only frame, like a streak's end, has none). `essential`, for a
    batch mixing lossless and lossy frames, is its lossless frames alone."""

    __slots__ = ("_json", "_msgpack", "essential", "frame", "offsets")

    def __init__(self, frame: dict[str, Any], offsets: dict[str, tuple[int, int]]) -> None:
        self.frame = frame
        self.offsets = offsets
        self._msgpack: bytes | None = None
        self._json: bytes | None = None
        self.essential: Encoded | None = None

    def framed(self, codec: Codec) -> bytes:
        """The WebSocket message carrying this frame in `codec`'s subprotocol."""
        if codec.format is Format.MSGPACK:
            if self._msgpack is None:
                self._msgpack = server_frame(encode_msgpack(self.frame))
            return self._msgpack
        if self._json is None:
            self._json = server_frame(encode_json(self.frame))
        return self._json


def history_offset(frame: dict[str, Any]) -> tuple[str, int] | None:
    """(kind, offset) of a history event; None for a live-only frame (e.g. a streak's end)."""
    kind, offset = frame.get("t"), frame.get("offset")
    if kind in HISTORY_KINDS and isinstance(offset, int) and not _is_streak_end(frame):
        return str(kind), offset
    return None


def _is_streak_end(frame: dict[str, Any]) -> bool:
    streak = frame.get("streak")
    return isinstance(streak, dict) and bool(streak.get("end"))


def single(frame: dict[str, Any]) -> Encoded:
    found = history_offset(frame)
    return Encoded(frame, {found[0]: (found[1], found[1])} if found else {})


def batch(room: str, frames: list[dict[str, Any]]) -> Encoded:
    """One frame for several, or a `batch` frame whose frames are handled in order."""
    if len(frames) == 1:
        return single(frames[0])
    offsets: dict[str, tuple[int, int]] = {}
    for frame in frames:
        found = history_offset(frame)
        if found is not None:
            kind, offset = found
            low, high = offsets.get(kind, (offset, offset))
            offsets[kind] = (min(low, offset), max(high, offset))
    return Encoded({"t": "batch", "room": room, "frames": frames}, offsets)
