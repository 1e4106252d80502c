"""The strict reader of client input (wire/fields.py) and the HTTP body decoder: what each
accepts exactly, and that everything else is an InvalidField / Undecodable, never another
exception."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftstream.errors import InvalidField
from giftstream.wire import fields
from giftstream.wire.codec import MAX_BODY_DEPTH, Undecodable, decode_json_body


@pytest.mark.parametrize(
    ("raw", "value"), [("0", 0), ("7", 7), ("007", 7), ("1000000000000", 10**12)]
)
def test_digits_reads_ascii_whole_numbers(raw: str, value: int) -> None:
    assert fields.digits(raw, "coins", 0, 10**12) == value


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("\u0663", id="arabic-indic-three"),
        pytest.param("\uff11", id="fullwidth-one"),
        pytest.param("9" * 5_000, id="5000-digits"),
        pytest.param("9" * 20, id="20-digits"),
        pytest.param("", id="empty"),
        pytest.param("-1", id="negative"),
        pytest.param("+1", id="plus"),
        pytest.param(" 1", id="space"),
        pytest.param("1\n", id="newline"),
        pytest.param("1_000", id="underscore"),
        pytest.param("0x10", id="hex"),
        pytest.param("1e3", id="exponent"),
        pytest.param("1000000000001", id="over-high"),
    ],
)
def test_digits_refuses_anything_but_bounded_ascii_digits_in_range(raw: str) -> None:
    with pytest.raises(InvalidField, match="'coins' must be a whole number"):
        fields.digits(raw, "coins", 0, 10**12)


@given(st.text(max_size=30))
def test_digits_answers_any_text_with_a_number_or_invalid_field(raw: str) -> None:
    try:
        value = fields.digits(raw, "n", 0, 10**18)
    except InvalidField:
        assert not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= 10**18)
    else:
        assert raw.isascii() and raw.isdigit() and value == int(raw)


@pytest.mark.parametrize("value", ["r1a2b3c4d5e6", "c0123456789abcdef", "no-such-room", "a.b_c"])
def test_ident_takes_server_ids(value: str) -> None:
    assert fields.ident(value, "room") == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("c0123456789abcdef:claims", id="other-key-suffix"),
        pytest.param("r1}x", id="brace"),
        pytest.param("r1{x}", id="hash-tag"),
        pytest.param("r 1", id="space"),
        pytest.param("r1\n", id="trailing-newline"),
        pytest.param("r\u00e9", id="non-ascii"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param("", id="empty"),
        pytest.param("r" * 65, id="65-chars"),
        pytest.param(12, id="int"),
        pytest.param(None, id="null"),
        pytest.param(["r1"], id="list"),
    ],
)
def test_ident_refuses_anything_that_could_name_another_key(value: Any) -> None:
    with pytest.raises(InvalidField, match="'chest' must be an id"):
        fields.ident(value, "chest")


@pytest.mark.parametrize("value", ["IN\n", "in", "I", "IND", "\u0130N", " IN", "I1", 5, None])
def test_region_is_two_capital_ascii_letters_and_nothing_more(value: Any) -> None:
    with pytest.raises(InvalidField, match="two-letter country code"):
        fields.region(value)


def test_region_takes_a_country_code() -> None:
    assert fields.region("IN") == "IN"


@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, "3", None, [1]])
def test_integer_refuses_what_is_not_an_integer(value: Any) -> None:
    with pytest.raises(InvalidField, match="must be an integer"):
        fields.integer(value, "count", 1, 10)


@pytest.mark.parametrize("value", [0, 11, 10**4_000])
def test_integer_refuses_what_is_out_of_range(value: int) -> None:
    with pytest.raises(InvalidField, match="between 1 and 10"):
        fields.integer(value, "count", 1, 10)


@pytest.mark.parametrize("value", ["", "x" * 65, "a\x00b", "line\nbreak", "\ud800", "tab\t", 5])
def test_text_refuses_empty_long_control_and_non_text(value: Any) -> None:
    with pytest.raises(InvalidField, match="'name'"):
        fields.text(value, "name", 64)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("\ud800", "\\ud800"), ("IN\n", "IN\\n"), ("é", "\\xe9"), ("x" * 100, "x" * 64), (5, "5")],
)
def test_quoted_is_short_escaped_ascii(value: object, shown: str) -> None:
    assert fields.quoted(value) == shown
    assert fields.quoted(value).isascii()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="100k-brackets"),
        pytest.param(b'{"a":' * 20_000, id="20k-objects"),
        pytest.param(b"[" * 1_000 + b"]" * 1_000, id="1000-deep-valid"),
        pytest.param(b'{"a":' * 20 + b"1" + b"}" * 20, id="20-deep-valid"),
        pytest.param(b'{"\\ud800": 1}', id="lone-surrogate-key"),
        pytest.param(b'{"name": "\\udfff"}', id="lone-surrogate-value"),
        pytest.param(b'{"coins": ' + b"9" * 5_000 + b"}", id="5000-digits"),
        pytest.param(b'{"coins": ' + b"9" * 21 + b"}", id="21-digits"),
        pytest.param(b'{"coins": NaN}', id="nan"),
        pytest.param(b'{"name": "\xff"}', id="not-utf8"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_hostile_json_body_is_undecodable_not_an_exception(body: bytes) -> None:
    with pytest.raises(Undecodable):
        decode_json_body(body)


def test_a_json_body_at_the_depth_limit_decodes() -> None:
    deepest: Any = 1
    for _ in range(MAX_BODY_DEPTH):
        deepest = [deepest]
    assert decode_json_body(json.dumps(deepest).encode()) == deepest


def test_an_ordinary_json_body_decodes_as_json_does() -> None:
    body = {"name": "Zoë 🌹", "coins": 10**12, "region": "US", "tags": [1, {"a": None}]}
    assert decode_json_body(json.dumps(body, ensure_ascii=False).encode()) == body
