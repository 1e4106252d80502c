"""Strict validation of client requests."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftstream.errors import BadFrame, ErrorCode, GiftstreamError, InvalidField, UnknownType
from giftstream.wire.requests import (
    MAX_GIFT_COUNT,
    MAX_ID_LENGTH,
    MAX_OFFSET,
    MAX_TOKEN_LENGTH,
    REQUEST_TYPES,
    Auth,
    Join,
    Leave,
    Ping,
    Request,
    SendGift,
    Since,
    parse_request,
    request_id,
)
from support import DROP, changed

GIFT: dict[str, Any] = {"t": "gift", "id": "req-1", "room": "r1", "gift": "rose", "count": 3}


def _invalid(frame: Any) -> InvalidField:
    with pytest.raises(InvalidField) as info:
        parse_request(frame)
    assert info.value.code is ErrorCode.INVALID_FIELD
    assert info.value.message
    return info.value


def _gift(**changes: Any) -> dict[str, Any]:
    return changed(GIFT, **changes)


# --- valid requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"t": "auth", "token": "tok"}, Auth(token="tok")),
        ({"t": "auth", "token": "tok", "id": "a1"}, Auth(token="tok", id="a1")),
        ({"t": "join", "room": "r1"}, Join(room="r1")),
        (
            {"t": "join", "room": "r1", "since": {"epoch": "ep", "offset": 41}, "id": "j1"},
            Join(room="r1", since=Since(epoch="ep", offset=41), id="j1"),
        ),
        (
            {"t": "join", "room": "r1", "since": {"epoch": "ep", "offset": 0}},
            Join(room="r1", since=Since(epoch="ep", offset=0)),
        ),
        (
            {"t": "join", "room": "r1", "since": {"epoch": "ep", "offset": MAX_OFFSET}},
            Join(room="r1", since=Since(epoch="ep", offset=MAX_OFFSET)),
        ),
        ({"t": "leave", "room": "r1"}, Leave(room="r1")),
        ({"t": "leave", "room": "r1", "id": "l1"}, Leave(room="r1", id="l1")),
        (GIFT, SendGift(id="req-1", room="r1", gift="rose", count=3)),
        ({"t": "ping"}, Ping()),
        ({"t": "ping", "id": "p1"}, Ping(id="p1")),
    ],
)
def test_valid_request_parses_into_its_typed_request(
    frame: dict[str, Any], expected: Request
) -> None:
    assert parse_request(frame) == expected


def test_gift_count_defaults_to_one() -> None:
    assert parse_request(_gift(count=DROP)) == SendGift(id="req-1", room="r1", gift="rose", count=1)


@pytest.mark.parametrize("count", [1, 200, MAX_GIFT_COUNT])
def test_gift_count_within_one_to_ten_thousand_is_accepted(count: int) -> None:
    request = parse_request(_gift(count=count))
    assert isinstance(request, SendGift)
    assert request.count == count


def test_join_with_null_since_joins_without_replay() -> None:
    assert parse_request({"t": "join", "room": "r1", "since": None}) == Join(room="r1")


def test_fields_at_their_maximum_length_are_accepted() -> None:
    longest = "x" * MAX_ID_LENGTH
    assert parse_request(_gift(id=longest, room=longest, gift=longest)) == SendGift(
        id=longest, room=longest, gift=longest, count=3
    )
    token = "t" * MAX_TOKEN_LENGTH
    assert parse_request({"t": "auth", "token": token}) == Auth(token=token)


def test_every_request_type_of_the_contract_is_known() -> None:
    assert {"auth", "join", "leave", "gift"} <= REQUEST_TYPES


# --- bad frames and unknown types -------------------------------------------------------------


@pytest.mark.parametrize(
    "frame", [None, 1, 1.5, True, "ping", b"\x80", [], [{"t": "ping"}], ("t", "ping")]
)
def test_a_frame_that_is_not_a_map_is_a_bad_frame(frame: Any) -> None:
    with pytest.raises(BadFrame) as info:
        parse_request(frame)
    assert info.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "frame",
    [{}, {"id": "x"}, {"t": None}, {"t": 1}, {"t": True}, {"t": b"ping"}, {"t": ["ping"]}],
)
def test_a_map_without_a_string_t_is_a_bad_frame(frame: dict[str, Any]) -> None:
    with pytest.raises(BadFrame) as info:
        parse_request(frame)
    assert info.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("kind", ["chat", "", "PING", "Gift", "welcome", "ack", "credit"])
def test_a_t_naming_no_request_is_an_unknown_type(kind: str) -> None:
    with pytest.raises(UnknownType) as info:
        parse_request({"t": kind})
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


def test_unknown_type_message_does_not_echo_a_huge_type_name() -> None:
    with pytest.raises(UnknownType) as info:
        parse_request({"t": "x" * 100_000})
    assert len(info.value.message) < 200


# --- unknown fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "ping", "x": 1},
        {"t": "auth", "token": "tok", "room": "r1"},
        {"t": "join", "room": "r1", "offset": 3},
        {"t": "leave", "room": "r1", "since": {"epoch": "e", "offset": 1}},
        {**GIFT, "amount": 5},
        {**GIFT, "Count": 5},
        {"t": "ping", 1: 2},
        {"t": "ping", None: 2},
    ],
)
def test_a_field_the_request_does_not_define_is_invalid(frame: dict[Any, Any]) -> None:
    _invalid(frame)


def test_unknown_field_message_does_not_echo_a_huge_field_name() -> None:
    assert len(_invalid({"t": "ping", "y" * 100_000: 1}).message) < 300


# --- missing and mistyped fields --------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "auth"},
        {"t": "auth", "id": "a1"},
        {"t": "join"},
        {"t": "join", "since": {"epoch": "e", "offset": 1}},
        {"t": "leave"},
        _gift(id=DROP),
        _gift(room=DROP),
        _gift(gift=DROP),
    ],
)
def test_a_missing_required_field_is_invalid(frame: dict[str, Any]) -> None:
    _invalid(frame)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"t": "auth", "token": 1}, id="int-token"),
        pytest.param({"t": "auth", "token": None}, id="null-token"),
        pytest.param({"t": "join", "room": 5}, id="int-room"),
        pytest.param({"t": "leave", "room": ["r1"]}, id="list-room"),
        pytest.param({"t": "ping", "id": 7}, id="int-id"),
        pytest.param({"t": "ping", "id": None}, id="null-id"),
        pytest.param(_gift(gift=7), id="int-gift-id"),
        pytest.param(_gift(gift=b"rose"), id="bytes-gift-id"),
        pytest.param(_gift(room=None), id="null-room"),
        pytest.param(_gift(id=True), id="bool-request-id"),
        pytest.param(_gift(count=True), id="bool-count"),
        pytest.param(_gift(count=False), id="false-count"),
        pytest.param(_gift(count=1.0), id="float-count"),
        pytest.param(_gift(count=2.5), id="fractional-count"),
        pytest.param(_gift(count="1"), id="string-count"),
        pytest.param(_gift(count=None), id="null-count"),
    ],
)
def test_a_field_of_the_wrong_type_is_invalid(frame: dict[str, Any]) -> None:
    _invalid(frame)


@pytest.mark.parametrize("count", [0, -1, MAX_GIFT_COUNT + 1, 2**63])
def test_a_gift_count_outside_one_to_ten_thousand_is_invalid(count: int) -> None:
    _invalid(_gift(count=count))


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_gift(id="x" * (MAX_ID_LENGTH + 1)), id="long-request-id"),
        pytest.param(_gift(id=""), id="empty-request-id"),
        pytest.param({"t": "ping", "id": ""}, id="empty-optional-id"),
        pytest.param(_gift(room="r" * (MAX_ID_LENGTH + 1)), id="long-room"),
        pytest.param(_gift(room=""), id="empty-room"),
        pytest.param(_gift(gift=""), id="empty-gift"),
        pytest.param({"t": "auth", "token": ""}, id="empty-token"),
        pytest.param({"t": "auth", "token": "t" * (MAX_TOKEN_LENGTH + 1)}, id="long-token"),
    ],
)
def test_a_string_field_empty_or_too_long_is_invalid(frame: dict[str, Any]) -> None:
    _invalid(frame)


@pytest.mark.parametrize(
    "since",
    [
        pytest.param([], id="list"),
        pytest.param(["ep", 1], id="pair"),
        pytest.param("ep:1", id="string"),
        pytest.param(5, id="int"),
        pytest.param(False, id="false"),
        pytest.param({}, id="empty-map"),
        pytest.param({"epoch": "ep"}, id="missing-offset"),
        pytest.param({"offset": 1}, id="missing-epoch"),
        pytest.param({"epoch": 1, "offset": 1}, id="int-epoch"),
        pytest.param({"epoch": "", "offset": 1}, id="empty-epoch"),
        pytest.param({"epoch": "e" * (MAX_ID_LENGTH + 1), "offset": 1}, id="long-epoch"),
        pytest.param({"epoch": "ep", "offset": -1}, id="negative-offset"),
        pytest.param({"epoch": "ep", "offset": MAX_OFFSET + 1}, id="offset-beyond-2**53"),
        pytest.param({"epoch": "ep", "offset": "1"}, id="string-offset"),
        pytest.param({"epoch": "ep", "offset": True}, id="bool-offset"),
        pytest.param({"epoch": "ep", "offset": 1.0}, id="float-offset"),
        pytest.param({"epoch": "ep", "offset": None}, id="null-offset"),
        pytest.param({"epoch": "ep", "offset": 1, "extra": 1}, id="unknown-field"),
        pytest.param({"epoch": "ep", "offset": 1, 2: 1}, id="non-string-key"),
    ],
)
def test_a_badly_shaped_since_is_invalid(since: Any) -> None:
    _invalid({"t": "join", "room": "r1", "since": since})


# --- request_id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"t": "gift", "id": "req-1"}, "req-1"),
        ({"t": "nonsense", "id": "req-2"}, "req-2"),
        ({"id": "x" * MAX_ID_LENGTH}, "x" * MAX_ID_LENGTH),
        ({"id": "x" * (MAX_ID_LENGTH + 1)}, None),
        ({"id": ""}, None),
        ({"id": 5}, None),
        ({"id": None}, None),
        ({"t": "ping"}, None),
        (["id", "req-1"], None),
        ("req-1", None),
        (None, None),
    ],
)
def test_request_id_names_a_usable_string_id_even_of_an_invalid_frame(
    frame: Any, expected: str | None
) -> None:
    assert request_id(frame) == expected


# --- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_is_equal_for_the_same_content_whatever_the_id() -> None:
    a = SendGift(id="a", room="r1", gift="rose", count=3)
    b = SendGift(id="b", room="r1", gift="rose", count=3)
    assert a.fingerprint == b.fingerprint


@pytest.mark.parametrize(
    "other",
    [
        SendGift(id="a", room="r2", gift="rose", count=3),
        SendGift(id="a", room="r1", gift="gg", count=3),
        SendGift(id="a", room="r1", gift="rose", count=4),
        SendGift(id="a", room="r1", gift="rose"),
    ],
)
def test_fingerprint_differs_when_room_gift_or_count_differ(other: SendGift) -> None:
    assert SendGift(id="a", room="r1", gift="rose", count=3).fingerprint != other.fingerprint


def test_fingerprint_tells_apart_fields_that_concatenate_alike() -> None:
    a = SendGift(id="a", room="r1", gift="1", count=3)
    b = SendGift(id="a", room="r", gift="11", count=3)
    c = SendGift(id="a", room="r1", gift="13", count=1)
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3


# --- properties -------------------------------------------------------------------------------

FIELD_NAMES = ["t", "id", "token", "room", "gift", "count", "since", "epoch", "offset"]
TYPE_NAMES = [*sorted(REQUEST_TYPES), "chat", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from([0, 1, MAX_GIFT_COUNT, MAX_GIFT_COUNT + 1, MAX_OFFSET, MAX_OFFSET + 1])
    | st.floats()
    | st.text(max_size=70)
    | st.sampled_from(TYPE_NAMES)
)
json_keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=25,
)
# What msgpack can decode beyond JSON: bytes, and non-string map keys.
msgpack_keys = json_keys | st.integers() | st.binary(max_size=4) | st.none() | st.booleans()
msgpack_values = st.recursive(
    scalars | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(msgpack_keys, children, max_size=5)
    ),
    max_leaves=25,
)
# Frames that name a request type, so that validation reaches every field.
typed_frames = st.builds(
    lambda kind, rest: {**rest, "t": kind},
    st.sampled_from(TYPE_NAMES),
    st.dictionaries(st.sampled_from(FIELD_NAMES[1:]), json_values, max_size=5),
)

PARSE_ERRORS: dict[type[GiftstreamError], ErrorCode] = {
    BadFrame: ErrorCode.BAD_FRAME,
    UnknownType: ErrorCode.UNKNOWN_TYPE,
    InvalidField: ErrorCode.INVALID_FIELD,
}


def _parses_or_refuses(frame: Any) -> None:
    try:
        request = parse_request(frame)
    except GiftstreamError as e:
        assert PARSE_ERRORS.get(type(e)) is e.code
        assert isinstance(e.message, str)
        assert e.message
        return
    assert isinstance(request, Auth | Join | Leave | SendGift | Ping)
    assert isinstance(frame, dict)
    assert frame["t"] in REQUEST_TYPES


@given(frame=json_values | typed_frames)
def test_parse_request_of_any_json_value_returns_a_request_or_raises_a_parse_error(
    frame: Any,
) -> None:
    _parses_or_refuses(frame)


@given(frame=msgpack_values)
def test_parse_request_of_any_msgpack_value_returns_a_request_or_raises_a_parse_error(
    frame: Any,
) -> None:
    _parses_or_refuses(frame)


# Request ids and gift ids are printable text (no control characters, no lone surrogates); rooms
# and chests are ids the server assigned (letters, digits, '-', '_', '.').
short_strings = st.text(
    alphabet=st.characters(categories=["L", "M", "N", "P", "S"]),
    min_size=1,
    max_size=MAX_ID_LENGTH,
)
server_ids = st.from_regex(rf"[A-Za-z0-9_.-]{{1,{MAX_ID_LENGTH}}}", fullmatch=True)


@given(
    ident=short_strings,
    room=server_ids,
    gift=short_strings,
    count=st.integers(min_value=1, max_value=MAX_GIFT_COUNT),
)
def test_any_well_formed_gift_frame_parses_to_exactly_its_fields(
    ident: str, room: str, gift: str, count: int
) -> None:
    frame = {"t": "gift", "id": ident, "room": room, "gift": gift, "count": count}
    assert parse_request(frame) == SendGift(id=ident, room=room, gift=gift, count=count)
    assert request_id(frame) == ident


@pytest.mark.parametrize("bad", ["a\x1fb", "line\nbreak", "\ud800", "tab\t"])
def test_identifiers_with_control_characters_or_lone_surrogates_are_invalid_fields(
    bad: str,
) -> None:
    with pytest.raises(InvalidField):
        parse_request({"t": "gift", "id": bad, "room": "r1", "gift": "rose"})
    with pytest.raises(InvalidField):
        parse_request({"t": "gift", "id": "g1", "room": bad, "gift": "rose"})
