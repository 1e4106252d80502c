"""Hostile input, property by property: whatever bytes or text a client sends, decoding and
validation end in a value, `Undecodable` (close 1007) or a protocol error (an `error` frame) —
never another exception — and the answer the server builds for it can be sent back.

What tests/unit/test_codec.py and test_requests.py already cover (random bytes and text,
truncated frames, random JSON and msgpack values) is not repeated here: these add deep nesting,
huge numbers, invalid UTF-8 inside msgpack strings, partial msgpack of msgpack-only types,
extension types, maps with non-string keys, and the encodability of the answers.
"""

import json
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from giftstream import tokens
from giftstream.errors import BadFrame, GiftstreamError, InvalidField, Unauthenticated, UnknownType
from giftstream.wire.codec import JSON, MSGPACK, Codec, Undecodable
from giftstream.wire.requests import (
    MAX_GIFT_COUNT,
    MAX_OFFSET,
    Auth,
    Claim,
    DropChest,
    Join,
    Leave,
    Ping,
    SendGift,
    parse_request,
    request_id,
)

PARSE_ERRORS = (BadFrame, UnknownType, InvalidField)
REQUESTS = (Auth, Join, Leave, SendGift, DropChest, Claim, Ping)
GIFT: dict[str, Any] = {"t": "gift", "id": "g-1", "room": "r1", "gift": "rose", "count": 1}
SECRET = tokens.Keyring(tokens.Key(b"s" * 32))
# The longest integer literal Python converts (sys.get_int_max_str_digits() by default).
INT_MAX_STR_DIGITS = 4_300

# Heavier examples (deep or long frames) need no per-example deadline on a loaded machine.
heavy = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def receive(codec: Codec, data: bytes | str) -> dict[str, Any] | None:
    """What the server does with one frame: decode, validate, and build the answer it sends.

    Returns None when the frame closes the connection (undecodable: 1007); otherwise the
    answer frame (an `error`, or a stand-in for the request's result), after checking that it
    encodes in the subprotocol into bytes a WebSocket frame can carry."""
    try:
        if codec is MSGPACK:
            assert isinstance(data, bytes)
            value = codec.decode(None, data)
        else:
            assert isinstance(data, str)
            value = codec.decode(data, None)
    except Undecodable:
        return None
    rid = request_id(value)
    try:
        request = parse_request(value)
    except GiftstreamError as e:
        assert isinstance(e, PARSE_ERRORS), f"{type(e).__name__} from validation"
        assert e.message and isinstance(e.message, str)
        # The answer realtime/session.py sends for a refused frame.
        answer: dict[str, Any] = {"t": "error", "code": e.code.value, "message": e.message}
        if rid is not None:
            answer["id"] = rid
    else:
        assert isinstance(request, REQUESTS)
        answer = {"t": "pong"} if rid is None else {"t": "pong", "id": rid}
    encoded = codec.encode(answer)
    if isinstance(encoded, str):
        # A text frame is UTF-8: an answer that cannot be encoded cannot be sent.
        encoded.encode("utf-8")
    return answer


# --- msgpack built byte by byte (the packer refuses what a hostile client can still send) ---


def mp_str(raw: bytes) -> bytes:
    """A msgpack str header and `raw` as its payload, whether or not it is UTF-8."""
    if len(raw) < 32:
        return bytes([0xA0 | len(raw)]) + raw
    if len(raw) < 256:
        return b"\xd9" + bytes([len(raw)]) + raw
    return b"\xda" + struct.pack(">H", len(raw)) + raw


def mp_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def mp_ext(code: int, data: bytes) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    tag = struct.pack(">b", code)
    if len(data) in fixed:
        return bytes([fixed[len(data)]]) + tag + data
    if len(data) < 256:
        return b"\xc7" + bytes([len(data)]) + tag + data
    return b"\xc8" + struct.pack(">H", len(data)) + tag + data


def gift_frame_with(field: bytes, value: bytes) -> bytes:
    """A gift frame whose field `field` (a packed key) holds `value` (packed bytes)."""
    pairs = [(msgpack.packb(k), msgpack.packb(v)) for k, v in GIFT.items()]
    pairs = [(k, v) for k, v in pairs if k != field] + [(field, value)]
    return mp_map(pairs)


def nested(depth: int, kind: str, leaf: bytes) -> bytes:
    """`depth` arrays (or single-key maps) around `leaf`."""
    layer = b"\x91" if kind == "array" else b"\x81\xa1k"
    return layer * depth + leaf


invalid_utf8 = st.binary(min_size=1, max_size=40).filter(lambda b: not _is_utf8(b))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


FIELDS = [b"\xa1t", b"\xa2id", b"\xa4room", b"\xa4gift", b"\xa5count", b"\xa5since"]

# --- deep nesting -----------------------------------------------------------------------------


@heavy
@given(
    depth=st.integers(min_value=1, max_value=5_000),
    kind=st.sampled_from(["array", "map"]),
    field=st.sampled_from(FIELDS),
    whole=st.booleans(),
)
def test_deeply_nested_msgpack_is_refused_or_undecodable_never_a_crash(
    depth: int, kind: str, field: bytes, whole: bool
) -> None:
    value = nested(depth, kind, b"\x01")
    data = value if whole else gift_frame_with(field, value)
    answer = receive(MSGPACK, data)
    if answer is not None:
        assert answer["t"] == "error"
        assert answer["code"] in ("bad_frame", "invalid_field", "unknown_type")


@heavy
@given(
    depth=st.integers(min_value=1, max_value=5_000),
    kind=st.sampled_from(["[", '{"k":']),
    field=st.sampled_from(["t", "id", "room", "gift", "count", "since", "token"]),
)
def test_deeply_nested_json_is_refused_or_undecodable_never_a_crash(
    depth: int, kind: str, field: str
) -> None:
    close = "]" if kind == "[" else "}"
    value = kind * depth + "1" + close * depth
    text = json.dumps({**GIFT, field: 0})[:-1] + f', "{field}": {value}}}'
    answer = receive(JSON, text)
    if answer is not None:
        assert answer["t"] == "error"


# --- huge numbers -----------------------------------------------------------------------------


@given(
    number=st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([2**53, 2**53 + 1, 2**63, 2**64 - 1, -(2**63), MAX_OFFSET + 1]),
    field=st.sampled_from(["count", "id", "room", "t", "since", "token", "extras"]),
)
def test_any_64_bit_integer_in_any_field_of_a_msgpack_frame_is_validated(
    number: int, field: str
) -> None:
    frame = {**GIFT, field: number}
    answer = receive(MSGPACK, msgpack.packb(frame))
    assert answer is not None
    if field == "count" and 1 <= number <= MAX_GIFT_COUNT:
        assert answer["t"] == "pong"
    else:
        assert answer["t"] == "error"
        assert answer["code"] in ("invalid_field", "bad_frame")


@heavy
@given(
    digits=st.integers(min_value=1, max_value=6_000),
    sign=st.sampled_from(["", "-"]),
    field=st.sampled_from(["count", "offset"]),
)
def test_an_integer_of_any_length_in_json_is_validated_or_undecodable(
    digits: int, sign: str, field: str
) -> None:
    number = sign + "9" * digits
    if field == "count":
        text = json.dumps(GIFT)[:-1] + f', "count": {number}}}'
        low, high = 1, MAX_GIFT_COUNT
    else:
        text = f'{{"t": "join", "room": "r1", "since": {{"epoch": "e", "offset": {number}}}}}'
        low, high = 0, MAX_OFFSET
    answer = receive(JSON, text)
    if digits > INT_MAX_STR_DIGITS:
        # Python refuses to read integers this long: undecodable, close 1007.
        assert answer is None
        return
    assert answer is not None
    if low <= int(number) <= high:
        assert answer["t"] == "pong"
    else:
        assert answer["code"] == "invalid_field"


@given(
    value=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308]),
    field=st.sampled_from(["count", "id", "t"]),
)
def test_floats_nan_and_infinity_in_msgpack_are_never_integers(value: float, field: str) -> None:
    answer = receive(MSGPACK, msgpack.packb({**GIFT, field: value}))
    assert answer is not None
    assert answer["t"] == "error"


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E999999", "0.0e-99999"])
def test_json_floats_that_overflow_are_refused_as_fields_not_a_crash(literal: str) -> None:
    answer = receive(JSON, json.dumps(GIFT)[:-1] + f', "count": {literal}}}')
    assert answer is not None
    assert answer["code"] == "invalid_field"


# --- invalid UTF-8 inside msgpack strings -----------------------------------------------------


@given(raw=invalid_utf8, where=st.sampled_from(["key", "value", "t", "whole"]))
def test_invalid_utf8_in_any_msgpack_str_is_undecodable(raw: bytes, where: str) -> None:
    bad = mp_str(raw)
    if where == "key":
        data = gift_frame_with(bad, b"\x01")
    elif where == "value":
        data = gift_frame_with(b"\xa4room", bad)
    elif where == "t":
        data = mp_map([(b"\xa1t", bad)])
    else:
        data = bad
    assert receive(MSGPACK, data) is None


@given(raw=invalid_utf8)
def test_invalid_utf8_in_a_msgpack_bin_is_bytes_and_refused_as_a_field(raw: bytes) -> None:
    # bin is not text: it decodes, and validation refuses it where a string is required.
    answer = receive(MSGPACK, gift_frame_with(b"\xa4room", b"\xc4" + bytes([len(raw)]) + raw))
    assert answer is not None
    assert answer["code"] == "invalid_field"


# --- partial msgpack --------------------------------------------------------------------------

msgpack_only_values = st.recursive(
    st.binary(max_size=12)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.builds(msgpack.ExtType, st.integers(min_value=0, max_value=127), st.binary(max_size=20))
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.integers(min_value=-5, max_value=5) | st.binary(max_size=3) | st.text(max_size=4),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@given(extra=st.dictionaries(st.text(max_size=6), msgpack_only_values, max_size=4), data=st.data())
def test_every_strict_prefix_of_a_frame_with_msgpack_only_types_is_undecodable(
    extra: dict[str, Any], data: st.DataObject
) -> None:
    packed = msgpack.packb({**GIFT, **extra}, use_bin_type=True)
    cut = data.draw(st.integers(min_value=0, max_value=len(packed) - 1))
    assert receive(MSGPACK, packed[:cut]) is None


@given(frame=msgpack_only_values, cut=st.integers(min_value=0), tail=st.binary(max_size=16))
def test_a_cut_frame_followed_by_other_bytes_is_decoded_or_undecodable_never_a_crash(
    frame: Any, cut: int, tail: bytes
) -> None:
    packed = msgpack.packb(frame, use_bin_type=True)
    answer = receive(MSGPACK, packed[: cut % (len(packed) + 1)] + tail)
    assert answer is None or answer["t"] in ("error", "pong")


# --- extension types --------------------------------------------------------------------------


@given(
    code=st.integers(min_value=-128, max_value=127),
    payload=st.binary(max_size=300),
    where=st.sampled_from(["whole", "value", "key", "t", "count"]),
)
def test_any_extension_type_anywhere_is_refused_or_undecodable(
    code: int, payload: bytes, where: str
) -> None:
    ext = mp_ext(code, payload)
    if where == "whole":
        data = ext
    elif where == "key":
        data = gift_frame_with(ext, b"\x01")
    elif where == "t":
        data = gift_frame_with(b"\xa1t", ext)
    else:
        data = gift_frame_with(b"\xa5count" if where == "count" else b"\xa4room", ext)
    answer = receive(MSGPACK, data)
    if answer is None:
        # Negative codes are reserved by msgpack: -1 (timestamp) when its payload is not a
        # timestamp, and the others always, are undecodable.
        assert code < 0
    else:
        assert answer["t"] == "error"
        expected = "bad_frame" if where in ("whole", "t") else "invalid_field"
        assert answer["code"] == expected


@given(seconds=st.integers(min_value=0, max_value=2**34 - 1), nanos=st.integers(0, 999_999_999))
def test_a_valid_timestamp_as_a_gift_count_is_an_invalid_field(seconds: int, nanos: int) -> None:
    frame = {**GIFT, "count": msgpack.Timestamp(seconds, nanos)}
    answer = receive(MSGPACK, msgpack.packb(frame, datetime=False))
    assert answer is not None
    assert answer["code"] == "invalid_field"


# --- maps with keys that are not strings ------------------------------------------------------

odd_keys = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=8)
    | st.none()
    | st.booleans()
    | st.floats()
    | st.builds(msgpack.ExtType, st.integers(min_value=0, max_value=127), st.binary(max_size=4))
)


@given(key=odd_keys, value=msgpack_only_values, frame=st.sampled_from(["gift", "ping", "auth"]))
def test_a_valid_frame_with_a_non_string_key_is_an_invalid_field(
    key: Any, value: Any, frame: str
) -> None:
    base = {
        "gift": GIFT,
        "ping": {"t": "ping", "id": "p-1"},
        "auth": {"t": "auth", "token": "v1.a.b"},
    }[frame]
    data = msgpack.packb({**base, key: value}, use_bin_type=True)
    answer = receive(MSGPACK, data)
    assert answer is not None
    assert answer["code"] == "invalid_field"
    assert len(answer["message"]) < 300


@given(key=odd_keys)
def test_a_since_with_a_non_string_key_is_an_invalid_field(key: Any) -> None:
    frame = {"t": "join", "room": "r1", "since": {"epoch": "e", "offset": 1, key: 1}}
    answer = receive(MSGPACK, msgpack.packb(frame, use_bin_type=True))
    assert answer is not None
    assert answer["code"] == "invalid_field"


@given(key=odd_keys)
def test_a_map_whose_only_key_is_not_a_string_is_a_bad_frame(key: Any) -> None:
    answer = receive(MSGPACK, msgpack.packb({key: "gift"}, use_bin_type=True))
    assert answer is not None
    assert answer["code"] == "bad_frame"


# --- answers can always be sent back ----------------------------------------------------------

# Text a JSON client may put in a frame: any code point, lone surrogates included (JSON writes
# them as \\ud800 escapes; they decode to Python strings that are not valid Unicode text).
any_text = st.text(alphabet=st.characters(codec=None), max_size=70)
json_strings = any_text | st.text(alphabet=st.characters(categories=["Cs"]), min_size=1)


@given(
    field=st.sampled_from(["t", "id", "room", "gift", "token", "x"]),
    value=json_strings,
    kind=st.sampled_from(["gift", "ping", "auth", "join", "leave"]),
)
def test_the_answer_to_any_json_frame_can_be_sent_as_utf8_text(
    field: str, value: str, kind: str
) -> None:
    frame: dict[str, Any] = {"t": kind, "id": "a-1", field: value}
    # ensure_ascii: the frame itself is plain ASCII text, valid on the wire.
    answer = receive(JSON, json.dumps(frame, ensure_ascii=True))
    assert answer is not None


# msgpack carries UTF-8 only: a lone surrogate cannot even be packed into a frame.
@given(
    value=st.text(alphabet=st.characters(codec="utf-8"), max_size=70),
    field=st.sampled_from(["t", "id", "room", "x"]),
)
def test_the_answer_to_any_msgpack_frame_can_be_encoded(value: str, field: str) -> None:
    answer = receive(MSGPACK, msgpack.packb({"t": "ping", field: value}))
    assert answer is not None


# --- the token validator ----------------------------------------------------------------------


@given(
    token=any_text
    | st.builds(
        lambda body, mac: f"v1.{body}.{mac}",
        any_text.filter(lambda s: "." not in s),
        any_text.filter(lambda s: "." not in s),
    )
)
def test_verifying_any_token_string_gives_claims_or_unauthenticated(token: str) -> None:
    try:
        claims = tokens.verify(token, SECRET, 0)
    except Unauthenticated as e:
        assert e.code.value == "unauthenticated"
        return
    assert isinstance(claims, tokens.Claims)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("v1.abc.é", id="non-ascii-signature"),
        pytest.param("v1.é.abc", id="non-ascii-body"),
        pytest.param("v1.\ud800.abc", id="lone-surrogate-body"),
        pytest.param("v1.abc.\ud800", id="lone-surrogate-signature"),
    ],
)
def test_a_token_with_non_ascii_parts_is_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated):
        tokens.verify(token, SECRET, 0)
