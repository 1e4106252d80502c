"""The fuzz run's own parts, without a server: its oracle follows the close-code table, and its
frames replay from a seed.
"""

import random

import pytest

from support import User
from support.fuzz_frames import Generator, Scene, Shot
from support.fuzz_oracle import MAX_FRAME_BYTES, oracle

ORACLE_CASES: list[tuple[bytes, bool, bool, int | None]] = [
    (b"\x81\xa1t\xa4ping", False, False, None),
    (b'{"t":"ping"}', True, True, None),
    (b'{"t":"ping"}', True, False, 1003),
    (b"\x81\xa1t\xa4ping", False, True, 1003),
    (b"\xc1", False, False, 1007),
    (b'{"t":NaN}', True, True, 1007),
    (b'{"t":"\xff"}', True, True, 1007),
    (b"x" * (MAX_FRAME_BYTES + 1), False, False, 1009),
]


@pytest.mark.parametrize(("data", "text", "json_mode", "close"), ORACLE_CASES)
def test_the_fuzzers_oracle_follows_the_close_code_table(
    data: bytes, text: bool, json_mode: bool, close: int | None
) -> None:
    assert oracle(data, text, json_mode)[0] == close


def test_the_fuzzer_is_deterministic_for_a_seed() -> None:
    scene = Scene("r1", "e1", User("h", "tok-h"))

    def frames(seed: str, json_mode: bool) -> list[Shot]:
        gen = Generator(random.Random(seed), json_mode, scene, User("v", "tok-v"))
        return [gen.shot() for _ in range(300)]

    for json_mode in (False, True):
        assert frames("a", json_mode) == frames("a", json_mode)
        assert frames("a", json_mode) != frames("b", json_mode)
