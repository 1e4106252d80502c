"""Encoding and decoding of frames for the two subprotocols."""

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

MSGPACK_SUBPROTOCOL = "giftstream.v1+msgpack"
JSON_SUBPROTOCOL = "giftstream.v1+json"


class Undecodable(Exception):
    """The bytes are not a value of the subprotocol's format (close code 1007)."""


class WrongFrameKind(Exception):
    """A text frame on the msgpack subprotocol or a binary one on JSON (close code 1003)."""


class Format(StrEnum):
    MSGPACK = "msgpack"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Codec:
    format: Format
    subprotocol: str

    @property
    def binary(self) -> bool:
        return self.format is Format.MSGPACK

    def encode(self, frame: dict[str, Any]) -> bytes | str:
        if self.format is Format.MSGPACK:
            return encode_msgpack(frame)
        return encode_json(frame)

    def decode(self, text: str | None, data: bytes | None) -> Any:
        if self.format is Format.MSGPACK:
            if data is None:
                raise WrongFrameKind("this connection speaks msgpack: send binary frames")
            return decode_msgpack(data)
        if text is None:
            raise WrongFrameKind("this connection speaks JSON: send text frames")
        return decode_json(text)


MSGPACK = Codec(Format.MSGPACK, MSGPACK_SUBPROTOCOL)
JSON = Codec(Format.JSON, JSON_SUBPROTOCOL)
CODECS = {MSGPACK_SUBPROTOCOL: MSGPACK, JSON_SUBPROTOCOL: JSON}


def negotiate(offered: list[str]) -> Codec:
    """The codec for the first subprotocol we speak among those offered; msgpack by default."""
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return MSGPACK


def encode_msgpack(frame: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed


def encode_json(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_msgpack(data: bytes) -> Any:
    try:
        # strict_map_key=False lets a map with a non-string key decode, so that validation can
        # answer it with invalid_field instead of closing the connection.
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise Undecodable(f"not a msgpack value: {e}") from e


def decode_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise Undecodable(f"not a JSON value: {e}") from e
