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
        raise Undecodable("not a msgpack value") from e


def decode_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise Undecodable("not a JSON value") from e


# An HTTP body is a small object: nesting and numbers beyond these are refused, not parsed.
MAX_BODY_DEPTH = 16
MAX_BODY_INT_DIGITS = 20


def _bounded_int(raw: str) -> int:
    if len(raw.lstrip("-")) > MAX_BODY_INT_DIGITS:
        raise ValueError("too many digits")
    return int(raw)


def decode_json_body(data: bytes) -> Any:
    """An HTTP request's JSON body: UTF-8, nested at most MAX_BODY_DEPTH deep, integers of at
    most MAX_BODY_INT_DIGITS digits, and every string (keys too) valid text."""
    try:
        value = json.loads(
            data.decode("utf-8"), parse_constant=_no_constant, parse_int=_bounded_int
        )
    except (ValueError, RecursionError) as e:
        raise Undecodable("this is not JSON text") from e
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_BODY_DEPTH:
                raise Undecodable(f"nested deeper than {MAX_BODY_DEPTH}")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and not _is_text(item):
            raise Undecodable("a string that is not text (a lone surrogate)")
    return value


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
