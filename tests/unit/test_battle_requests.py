"""The battle requests (`battle_invite`, `battle_accept`, `battle_decline`, `battle_end`):
what they accept and what they refuse, before anything reaches the store."""

from typing import Any

import pytest

from giftstream.errors import InvalidField
from giftstream.wire.requests import BattleAction, BattleInvite, battle_invite, parse_request


def test_an_invite_names_one_to_three_rooms_and_may_ask_for_a_duration() -> None:
    assert parse_request({"t": "battle_invite", "id": "i", "rooms": ["r1"]}) == BattleInvite(
        rooms=("r1",), id="i"
    )
    three = {"t": "battle_invite", "rooms": ["r1", "r2", "r3"], "duration_s": 120}
    assert parse_request(three) == BattleInvite(rooms=("r1", "r2", "r3"), duration_s=120)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rooms": []},
        {"rooms": ["r1", "r2", "r3", "r4"]},
        {"rooms": "r1"},
        {"rooms": [1]},
        {"rooms": [""]},
        {"rooms": ["r1"], "duration_s": True},
        {"rooms": ["r1"], "duration_s": 1.5},
        {"rooms": ["r1"], "duration_s": 0},
        {"rooms": ["r1"], "duration_s": "60"},
    ],
)
def test_an_invite_without_one_to_three_room_ids_or_with_a_bad_duration_is_refused(
    body: dict[str, Any],
) -> None:
    with pytest.raises(InvalidField):
        battle_invite(body)


@pytest.mark.parametrize("action", ["battle_accept", "battle_decline", "battle_end"])
def test_each_answer_to_a_battle_names_the_battle_and_nothing_else(action: str) -> None:
    assert parse_request({"t": action, "battle": "b1", "id": "x"}) == BattleAction(
        action=action, battle="b1", id="x"
    )
    with pytest.raises(InvalidField):
        parse_request({"t": action})
    with pytest.raises(InvalidField):
        parse_request({"t": action, "battle": "b1", "room": "r1"})
