"""The chest service's refusals: each Function status keeps its code, in words that name the
request where the service knows more than the table's sentence."""

import pytest

from giftstream.chests import claim_refusal, drop_refusal
from giftstream.errors import ERRORS, ErrorCode, Refused
from giftstream.wire.requests import Claim, DropChest

DROP = DropChest(id="drop-1", room="r1", coins=500)
CLAIM = Claim(room="r1", chest="c0123", id="claim-1")


@pytest.mark.parametrize(
    ("status", "values", "code", "message"),
    [
        (
            "insufficient",
            (40,),
            ErrorCode.INSUFFICIENT_COINS,
            "a chest of 500 coins needs more than your 40",
        ),
        (
            "conflict",
            (),
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "the id 'drop-1' was already used for another chest",
        ),
        ("frozen", (), ErrorCode.FORBIDDEN, "this account is frozen"),
        ("no_user", (), ErrorCode.NOT_FOUND, "your account no longer exists"),
    ],
)
def test_every_refusal_of_a_drop_keeps_its_code_in_words_that_name_the_drop(
    status: str, values: tuple[int, ...], code: ErrorCode, message: str
) -> None:
    error = drop_refusal(Refused(status, values), DROP)
    assert (error.code, error.message) == (code, message)


@pytest.mark.parametrize(
    ("status", "values", "code", "message"),
    [
        ("not_open", (1_700_000,), ErrorCode.CHEST_NOT_OPEN, "chest 'c0123' is not open yet"),
        ("closed", (), ErrorCode.CHEST_CLOSED, "chest 'c0123' can no longer be claimed"),
        ("already", (2,), ErrorCode.ALREADY_CLAIMED, "you already claimed chest 'c0123'"),
        ("own_chest", (), ErrorCode.FORBIDDEN, "you cannot claim your own chest"),
        ("not_found", (), ErrorCode.NOT_FOUND, "there is no chest 'c0123' in this room"),
        (
            "not_present",
            (),
            ErrorCode.NOT_PRESENT,
            ERRORS[ErrorCode.NOT_PRESENT].sentence,
        ),
    ],
)
def test_every_refusal_of_a_claim_keeps_its_code_in_words_that_name_the_chest(
    status: str, values: tuple[int, ...], code: ErrorCode, message: str
) -> None:
    error = claim_refusal(Refused(status, values), CLAIM)
    assert (error.code, error.message) == (code, message)


def test_a_status_no_chest_function_returns_stays_an_internal_error() -> None:
    error = claim_refusal(Refused("no_such_status"), CLAIM)
    assert (error.code, error.message) == (
        ErrorCode.INTERNAL,
        ERRORS[ErrorCode.INTERNAL].sentence,
    )
