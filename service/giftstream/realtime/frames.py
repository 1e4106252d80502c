"""A frame encoded at most once per subprotocol, however many members receive it."""

from typing import Any

from giftstream.realtime.outbound import Payload
from giftstream.wire.codec import Codec, Format, encode_json, encode_msgpack


class Encoded:
    """`offset` is set for events of the room history (`gift`, `credit`), which are delivered
    exactly once; live-only frames (a streak's end, room state) have none."""

    __slots__ = ("_json", "_msgpack", "frame", "offset")

    def __init__(self, frame: dict[str, Any], offset: int | None = None) -> None:
        self.frame = frame
        self.offset = offset
        self._msgpack: bytes | None = None
        self._json: str | None = None

    def for_codec(self, codec: Codec) -> Payload:
        if codec.format is Format.MSGPACK:
            if self._msgpack is None:
                self._msgpack = encode_msgpack(self.frame)
            return self._msgpack
        if self._json is None:
            self._json = encode_json(self.frame)
        return self._json
