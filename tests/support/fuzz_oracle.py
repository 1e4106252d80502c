"""The fuzz run's settings and its oracle (tests/e2e/test_fuzz.py): what the protocol requires for
each frame, decided by a standard msgpack or JSON reader and independently of the server's code:

- larger than `max_frame_bytes` → close 1009; a text frame on msgpack or binary on JSON → 1003;
  not decodable by a standard msgpack or JSON reader (or not UTF-8 text) → 1007;
- anything else → exactly one answer (a result or an `error`, never `internal`) naming the
  frame's `id` when it has a usable one; a value that is not a map, or has no string `t`, is a
  `bad_frame`; an unknown `t` an `unknown_type`; an unknown field an `invalid_field`.
"""

import json
from typing import Any

import msgpack

SEED = 20_261_122
SHORT_FRAMES = 10_000
LONG_FRAMES = 100_000
# Connections fuzzing at once: half msgpack, half JSON; each is its own viewer.
CONNECTIONS = 6
MAX_FRAME_BYTES = 65_536  # the default max_frame_bytes
VIEWER_COINS = 500_000
ANSWER_WAIT_S = 2.0
# After ANSWER_WAIT_S without an answer, a ping fence: if even it is not answered in this long,
# the connection is hung.
FENCE_WAIT_S = 3.0
CLOSE_WAIT_S = 10.0
SETUP_ATTEMPTS = 5

# The requests of the protocol and the fields each defines (docs/protocol.md).
REQUEST_FIELDS: dict[str, frozenset[str]] = {
    "auth": frozenset({"t", "id", "token", "extras"}),
    "join": frozenset({"t", "id", "room", "since"}),
    "leave": frozenset({"t", "id", "room"}),
    "gift": frozenset({"t", "id", "room", "gift", "count"}),
    "ping": frozenset({"t", "id"}),
    "drop_chest": frozenset({"t", "id", "room", "coins"}),
    "claim": frozenset({"t", "id", "room", "chest"}),
}
# The answer each request gets when it succeeds (or else an `error`).
RESULT_OF = {
    "auth": "welcome",
    "join": "joined",
    "leave": "left",
    "gift": "ack",
    "ping": "pong",
    "drop_chest": "dropped",
    "claim": "claimed",
}
ANSWER_TYPES = frozenset({*RESULT_OF.values(), "error"})
GIFTS = ["rose", "finger_heart", "confetti", "gg", "hand_hearts"]
# What a mutation puts in `t` (not `drop_chest`: a valid one would spend coins on a chest).
RETYPES: list[Any] = ["auth", "join", "leave", "gift", "ping", "claim", "welcome", "ack", ""]
RETYPES += ["GIFT", "gift\x00", "x" * 100, 7, None, True, ["gift"], {"t": "gift"}]


class Undecodable(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise Undecodable(name)


def oracle(data: bytes, text: bool, json_mode: bool) -> tuple[int | None, Any]:
    """What the protocol requires for one frame: (close code, None), or (None, the value the
    server reads from it). Decided by a standard reader, not by the server's code."""
    if len(data) > MAX_FRAME_BYTES:
        return 1009, None
    source = ""
    if text:
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            return 1007, None
    if text != json_mode:
        return 1003, None
    try:
        if json_mode:
            return None, json.loads(source, parse_constant=_refuse_constant)
        return None, msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (Exception, RecursionError):
        return 1007, None


def expected_error(value: Any) -> str | None:
    """The error code the protocol requires for a decoded value, when its shape decides it."""
    if not isinstance(value, dict):
        return "bad_frame"
    kind = value.get("t")
    if not isinstance(kind, str):
        return "bad_frame"
    allowed = REQUEST_FIELDS.get(kind)
    if allowed is None:
        return "unknown_type"
    if any(not isinstance(k, str) or k not in allowed for k in value):
        return "invalid_field"
    return None


def usable_id(value: Any) -> str | None:
    """The `id` an answer must repeat: a string of 1 to 64 printable characters."""
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, str) and 0 < len(rid) <= 64 and rid.isprintable():
            return rid
    return None
