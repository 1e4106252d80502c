"""The error table (errors.ERRORS) is the one source of every code: the docs, the Lua statuses
and the answers of the edges agree with it."""

import re
from importlib import resources
from pathlib import Path

import pytest

from giftstream.errors import ERRORS, LUA_STATUS, ErrorCode, GiftstreamError, Refused, Unavailable

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "protocol.md"
# Statuses of a Function's answers that are not refusals: results, replays, and
# giftstream_user_create's `exists` (a generated user id taken: an internal error, which no client
# can cause).
ANSWERS = {"ok", "replay", "pending", "declined", "dup", "settled", "not_due", "not_live", "exists"}
# gift_debit's and gift_answer's: the ledger of record must tell (cold), or the id is new.
ANSWERS |= {"cold", "new"}


def _section(title: str) -> str:
    text = PROTOCOL.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n#", start + len(title) + 2)
    return text[start : end if end != -1 else len(text)]


def _documented_codes() -> dict[str, int]:
    """`code -> HTTP status` of docs/protocol.md's table of error codes."""
    rows = re.findall(r"^\| `([a-z_]+)`[^|]*\|.*\| (\d{3}) \|$", _section("## Error codes"), re.M)
    return {code: int(status) for code, status in rows}


def _lua_statuses() -> set[str]:
    functions = resources.files("giftstream.store") / "functions"
    statuses: set[str] = set()
    for lua in functions.iterdir():
        if lua.name.endswith(".lua"):
            statuses |= set(re.findall(r"return \{'([a-z_]+)'", lua.read_text(encoding="utf-8")))
    return statuses


def test_every_code_is_declared_once_in_the_table() -> None:
    assert list(ERRORS) == list(ErrorCode)
    assert all(code is spec.code for code, spec in ERRORS.items())


def test_the_docs_error_table_lists_every_code_with_its_http_status() -> None:
    documented = _documented_codes()
    declared = {code.value: spec.http for code, spec in ERRORS.items()}
    assert documented == declared


def test_the_docs_close_codes_include_every_close_the_table_answers_with() -> None:
    closes = _section("### Close codes")
    for spec in ERRORS.values():
        if spec.ws_close is not None:
            assert f"| {spec.ws_close} |" in closes, spec.code


def test_each_lua_status_names_one_code() -> None:
    declared = [status for spec in ERRORS.values() for status in spec.lua]
    assert len(declared) == len(set(declared)) == len(LUA_STATUS)


def test_every_refusal_a_function_returns_has_a_code_and_every_declared_status_is_returned() -> (
    None
):
    returned = _lua_statuses()
    assert returned - ANSWERS == set(LUA_STATUS)


@pytest.mark.parametrize("status", sorted(LUA_STATUS))
def test_a_refusal_carries_the_code_of_its_status_and_its_default_sentence(status: str) -> None:
    refused = Refused(status, (7, 8))
    code = LUA_STATUS[status]
    assert (refused.code, refused.message) == (code, ERRORS[code].sentence)
    assert (refused.value, refused.values) == (7, (7, 8))


def test_a_status_the_table_does_not_name_is_an_internal_error() -> None:
    refused = Refused("exists")
    assert refused.code is ErrorCode.INTERNAL
    assert refused.value == 0


def test_a_refusal_in_the_callers_words_keeps_its_code() -> None:
    refused = Refused("insufficient", (3,))
    said = refused.said({ErrorCode.INSUFFICIENT_COINS: f"the balance is {refused.value}"})
    assert (said.code, said.message) == (ErrorCode.INSUFFICIENT_COINS, "the balance is 3")
    other = refused.said({ErrorCode.FORBIDDEN: "not this one"})
    assert (other.code, other.message) == (refused.code, refused.message)


def test_retry_comes_from_the_table() -> None:
    assert Unavailable("x").retry is True
    assert GiftstreamError("x").retry is False
    assert [c for c, spec in ERRORS.items() if spec.retry] == [ErrorCode.UNAVAILABLE]
