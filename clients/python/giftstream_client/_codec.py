"""The two subprotocols of protocol v1, as the client speaks them: msgpack in binary frames
(the default) or JSON in text frames. Its own copy, so that the client needs no server code; a
server test holds the names to the server's (tests/client/test_client_contract.py)."""

import json
from dataclasses import dataclass
from typing import Any

import msgpack

MSGPACK_SUBPROTOCOL = "giftstream.v1+msgpack"
JSON_SUBPROTOCOL = "giftstream.v1+json"


class Undecodable(Exception):
    """A frame that is not a value of the subprotocol's format, or not of its kind (text on
    msgpack, binary on JSON)."""


@dataclass(frozen=True, slots=True)
class Codec:
    subprotocol: str
    binary: bool

    def encode(self, frame: dict[str, Any]) -> bytes | str:
        if self.binary:
            packed: bytes = msgpack.packb(frame, use_bin_type=True)
            return packed
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)

    def decode(self, message: str | bytes) -> Any:
        if self.binary:
            if not isinstance(message, bytes):
                raise Undecodable("a text frame on the msgpack subprotocol")
            try:
                # As the server reads them: a map with a non-string key is still a value.
                return msgpack.unpackb(message, raw=False, strict_map_key=False)
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                raise Undecodable("not a msgpack value") from e
        if not isinstance(message, str):
            raise Undecodable("a binary frame on the JSON subprotocol")
        try:
            return json.loads(message, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            raise Undecodable("not a JSON value") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


MSGPACK = Codec(MSGPACK_SUBPROTOCOL, binary=True)
JSON = Codec(JSON_SUBPROTOCOL, binary=False)
