"""Frame encoding and decoding for the msgpack and JSON subprotocols."""

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftstream.wire.codec import (
    JSON,
    JSON_SUBPROTOCOL,
    MSGPACK,
    MSGPACK_SUBPROTOCOL,
    Format,
    Undecodable,
    WrongFrameKind,
    decode_json,
    decode_msgpack,
    encode_json,
    encode_msgpack,
    negotiate,
)

GIFT_FRAME: dict[str, Any] = {
    "t": "gift",
    "room": "r1",
    "event": "e-01",
    "offset": 41,
    "from": "alice",
    "to": "host",
    "gift": "rose",
    "count": 1,
    "coins": 1,
    "streak": {"id": "e-00", "repeat": 17, "end": False},
}

BATCH_FRAME: dict[str, Any] = {
    "t": "batch",
    "room": "r1",
    "frames": [GIFT_FRAME, {**GIFT_FRAME, "offset": 43, "streak": None}],
}

# Values both formats carry unchanged: JSON's data model (finite floats, string keys).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
frames = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


# --- negotiation ------------------------------------------------------------------------------


def test_subprotocol_names_are_those_of_the_wire_contract() -> None:
    assert MSGPACK_SUBPROTOCOL == "giftstream.v1+msgpack"
    assert JSON_SUBPROTOCOL == "giftstream.v1+json"
    assert (MSGPACK.subprotocol, MSGPACK.format, MSGPACK.binary) == (
        MSGPACK_SUBPROTOCOL,
        Format.MSGPACK,
        True,
    )
    assert (JSON.subprotocol, JSON.format, JSON.binary) == (JSON_SUBPROTOCOL, Format.JSON, False)


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ([JSON_SUBPROTOCOL], JSON_SUBPROTOCOL),
        ([MSGPACK_SUBPROTOCOL], MSGPACK_SUBPROTOCOL),
        ([JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL], JSON_SUBPROTOCOL),
        ([MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL], MSGPACK_SUBPROTOCOL),
        (["chat", "giftstream.v2+json", JSON_SUBPROTOCOL], JSON_SUBPROTOCOL),
    ],
)
def test_negotiate_picks_the_first_offered_subprotocol_it_knows(
    offered: list[str], expected: str
) -> None:
    assert negotiate(offered).subprotocol == expected


@pytest.mark.parametrize("offered", [[], ["chat"], ["GIFTSTREAM.V1+JSON", "giftstream.v1"]])
def test_negotiate_defaults_to_msgpack_when_nothing_known_is_offered(offered: list[str]) -> None:
    assert negotiate(offered) is MSGPACK


# --- encoding ---------------------------------------------------------------------------------


def test_msgpack_codec_encodes_binary_and_json_codec_encodes_text() -> None:
    assert isinstance(MSGPACK.encode(GIFT_FRAME), bytes)
    assert isinstance(JSON.encode(GIFT_FRAME), str)


def test_encode_json_is_compact_and_keeps_non_ascii_characters() -> None:
    assert encode_json({"a": 1, "b": [1, 2], "name": "Zoë 🌹"}) == (
        '{"a":1,"b":[1,2],"name":"Zoë 🌹"}'
    )


def test_encode_msgpack_is_standard_msgpack() -> None:
    assert msgpack.unpackb(encode_msgpack(GIFT_FRAME), raw=False) == GIFT_FRAME


def test_encode_msgpack_packs_bytes_as_bin_and_text_as_str() -> None:
    packed = encode_msgpack({"b": b"\x00", "s": "x"})
    assert packed == b"\x82\xa1b\xc4\x01\x00\xa1s\xa1x"


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [GIFT_FRAME, BATCH_FRAME, {}])
def test_json_round_trip_returns_the_same_frame(frame: dict[str, Any]) -> None:
    assert decode_json(encode_json(frame)) == frame
    text = JSON.encode(frame)
    assert isinstance(text, str)
    assert JSON.decode(text, None) == frame


@pytest.mark.parametrize("frame", [GIFT_FRAME, BATCH_FRAME, {}])
def test_msgpack_round_trip_returns_the_same_frame(frame: dict[str, Any]) -> None:
    assert decode_msgpack(encode_msgpack(frame)) == frame
    data = MSGPACK.encode(frame)
    assert isinstance(data, bytes)
    assert MSGPACK.decode(None, data) == frame


def test_msgpack_decodes_a_frame_from_another_msgpack_encoder() -> None:
    assert decode_msgpack(msgpack.packb({"t": "auth", "token": "tok"})) == {
        "t": "auth",
        "token": "tok",
    }


def test_msgpack_decodes_a_map_with_a_non_string_key_for_validation_to_refuse() -> None:
    assert decode_msgpack(msgpack.packb({"t": "ping", 1: 2})) == {"t": "ping", 1: 2}


def test_msgpack_round_trip_keeps_bytes_as_bytes() -> None:
    assert decode_msgpack(encode_msgpack({"b": b"\x00\xff"})) == {"b": b"\x00\xff"}


@given(frame=frames)
def test_json_round_trip_of_any_json_frame_is_identity(frame: dict[str, Any]) -> None:
    assert decode_json(encode_json(frame)) == frame


@given(frame=frames)
def test_msgpack_round_trip_of_any_json_frame_is_identity(frame: dict[str, Any]) -> None:
    assert decode_msgpack(encode_msgpack(frame)) == frame


# --- wrong frame kind -------------------------------------------------------------------------


def test_text_frame_on_the_msgpack_subprotocol_is_the_wrong_kind() -> None:
    with pytest.raises(WrongFrameKind):
        MSGPACK.decode('{"t":"ping"}', None)


def test_binary_frame_on_the_json_subprotocol_is_the_wrong_kind() -> None:
    with pytest.raises(WrongFrameKind):
        JSON.decode(None, b'{"t":"ping"}')


# --- undecodable msgpack ----------------------------------------------------------------------


@pytest.mark.parametrize("cut", range(len(encode_msgpack(GIFT_FRAME))))
def test_truncated_msgpack_is_undecodable(cut: int) -> None:
    with pytest.raises(Undecodable):
        decode_msgpack(encode_msgpack(GIFT_FRAME)[:cut])


@given(frame=frames.filter(bool), data=st.data())
def test_every_strict_prefix_of_a_msgpack_frame_is_undecodable(
    frame: dict[str, Any], data: st.DataObject
) -> None:
    packed = encode_msgpack(frame)
    cut = data.draw(st.integers(min_value=0, max_value=len(packed) - 1))
    with pytest.raises(Undecodable):
        decode_msgpack(packed[:cut])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x81\xa1t\xc1", id="reserved-byte-inside-map"),
        pytest.param(b"\xa1\xff", id="invalid-utf8-str"),
        pytest.param(b"\x01\x02", id="extra-data"),
        pytest.param(encode_msgpack({"t": "ping"}) + b"\x00", id="frame-then-extra-byte"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array-longer-than-the-buffer"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map-longer-than-the-buffer"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str-longer-than-the-buffer"),
        pytest.param(b"\x81\x91\x01\x01", id="unhashable-map-key"),
        pytest.param(b"\xc7\x03\xff\x00\x00\x00", id="bad-timestamp-extension"),
        pytest.param(b"\x91" * 100_000 + b"\x01", id="deep-nesting"),
    ],
)
def test_garbage_msgpack_is_undecodable(data: bytes) -> None:
    with pytest.raises(Undecodable):
        decode_msgpack(data)
    with pytest.raises(Undecodable):
        MSGPACK.decode(None, data)


@given(data=st.binary(max_size=64))
def test_decode_msgpack_of_any_bytes_returns_a_value_or_raises_undecodable(data: bytes) -> None:
    try:
        decode_msgpack(data)
    except Undecodable:
        pass


# --- undecodable JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("{", id="truncated-map"),
        pytest.param('{"t":"ping"', id="unclosed-map"),
        pytest.param('{"t":', id="missing-value"),
        pytest.param("{'t': 'ping'}", id="single-quotes"),
        pytest.param('{"t":"ping"} {}', id="extra-data"),
        pytest.param("NaN", id="nan"),
        pytest.param('{"t":"gift","count":NaN}', id="nan-inside-map"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("[-Infinity]", id="minus-infinity"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deep-nesting"),
        pytest.param("1" * 5_000, id="integer-too-long"),
        pytest.param("\x00", id="control-character"),
    ],
)
def test_invalid_json_is_undecodable(text: str) -> None:
    with pytest.raises(Undecodable):
        decode_json(text)
    with pytest.raises(Undecodable):
        JSON.decode(text, None)


@pytest.mark.parametrize("cut", range(1, len(encode_json(GIFT_FRAME))))
def test_truncated_json_frame_is_undecodable(cut: int) -> None:
    with pytest.raises(Undecodable):
        decode_json(encode_json(GIFT_FRAME)[:cut])


@given(text=st.text(max_size=64))
def test_decode_json_of_any_text_returns_a_value_or_raises_undecodable(text: str) -> None:
    try:
        value = decode_json(text)
    except Undecodable:
        return
    # Whatever decodes is a value JSON can write back.
    assert json.loads(json.dumps(value)) == value
