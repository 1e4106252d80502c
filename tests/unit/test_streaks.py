"""The room's StreakBook: when a streak of taps ends."""

from giftstream.domain.streaks import StreakBook, StreakTap

TIMEOUT_MS = 3_000


def tap(
    streak_id: str = "s1",
    repeat: int = 1,
    seen_ms: int = 0,
    *,
    sender: str = "alice",
    gift: str = "rose",
) -> StreakTap:
    return StreakTap(
        streak_id=streak_id,
        sender=sender,
        gift=gift,
        repeat=repeat,
        seen_ms=seen_ms,
        event={"t": "gift", "streak": {"id": streak_id, "repeat": repeat}, "from": sender},
    )


def test_first_tap_opens_a_streak_and_ends_nothing() -> None:
    book = StreakBook(TIMEOUT_MS)
    assert book.observe(tap("s1", 1, 0)) == []
    assert len(book) == 1


def test_more_taps_of_the_same_streak_end_nothing_and_keep_the_latest_tap() -> None:
    book = StreakBook(TIMEOUT_MS)
    for repeat in range(1, 18):
        assert book.observe(tap("s1", repeat, repeat * 100)) == []
    assert len(book) == 1
    assert book.close_sender("alice") == [tap("s1", 17, 1_700)]


def test_a_new_streak_id_from_the_same_sender_ends_the_previous_streak() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 1, 0))
    book.observe(tap("s1", 2, 100))
    ended = book.observe(tap("s2", 1, 200, gift="gg"))
    assert ended == [tap("s1", 2, 100)]
    assert len(book) == 1
    assert book.close_sender("alice") == [tap("s2", 1, 200, gift="gg")]


def test_streaks_of_different_senders_do_not_end_each_other() -> None:
    book = StreakBook(TIMEOUT_MS)
    assert book.observe(tap("a1", 1, 0, sender="alice")) == []
    assert book.observe(tap("b1", 1, 10, sender="bob")) == []
    assert book.observe(tap("b1", 2, 20, sender="bob")) == []
    assert len(book) == 2
    assert book.close_sender("alice") == [tap("a1", 1, 0, sender="alice")]
    assert len(book) == 1


def test_close_sender_ends_and_removes_the_open_streak() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 3, 50))
    assert book.close_sender("alice") == [tap("s1", 3, 50)]
    assert len(book) == 0
    assert book.close_sender("alice") == []


def test_close_sender_without_an_open_streak_ends_nothing() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 1, 0, sender="bob"))
    assert book.close_sender("alice") == []
    assert len(book) == 1


def test_after_close_sender_the_next_tap_opens_a_streak_without_ending_one() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 1, 0))
    book.close_sender("alice")
    assert book.observe(tap("s2", 1, 10)) == []
    assert len(book) == 1


def test_expire_ends_a_streak_quiet_for_exactly_the_timeout() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 5, 1_000))
    assert book.expire(1_000 + TIMEOUT_MS) == [tap("s1", 5, 1_000)]
    assert len(book) == 0


def test_expire_keeps_a_streak_quiet_for_less_than_the_timeout() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 5, 1_000))
    assert book.expire(1_000 + TIMEOUT_MS - 1) == []
    assert len(book) == 1


def test_expire_measures_quiet_time_from_the_latest_tap() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 1, 0))
    book.observe(tap("s1", 2, 2_000))
    assert book.expire(TIMEOUT_MS) == []
    assert book.expire(2_000 + TIMEOUT_MS) == [tap("s1", 2, 2_000)]


def test_expire_ends_only_the_quiet_streaks() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("a1", 4, 0, sender="alice"))
    book.observe(tap("b1", 9, 2_500, sender="bob"))
    assert book.expire(TIMEOUT_MS) == [tap("a1", 4, 0, sender="alice")]
    assert len(book) == 1
    assert book.close_sender("bob") == [tap("b1", 9, 2_500, sender="bob")]


def test_an_expired_streak_is_not_ended_again() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 1, 0))
    assert len(book.expire(TIMEOUT_MS)) == 1
    assert book.expire(10 * TIMEOUT_MS) == []
    assert book.close_sender("alice") == []


def test_a_late_older_tap_keeps_the_higher_repeat_and_refreshes_the_clock() -> None:
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 5, 1_000))
    assert book.observe(tap("s1", 3, 2_000)) == []
    assert len(book) == 1
    # The clock was refreshed by the late tap: not quiet yet 3 s after the repeat-5 tap.
    assert book.expire(1_000 + TIMEOUT_MS) == []
    [ended] = book.expire(2_000 + TIMEOUT_MS)
    assert ended.repeat == 5
    assert ended.event == tap("s1", 5).event
    assert ended.seen_ms == 2_000


def test_a_late_tap_of_an_already_ended_streak_does_not_end_or_reopen_anything() -> None:
    # Credits can reach the room out of debit order (the StreakBook handles this within one
    # streak). Across a switch: s1 #2 is debited before s2 #1 but reaches the room after it.
    book = StreakBook(TIMEOUT_MS)
    book.observe(tap("s1", 1, 0))
    assert book.observe(tap("s2", 1, 100, gift="gg")) == [tap("s1", 1, 0)]
    # The late s1 tap must not end s2 (which goes on), nor reopen s1, which already ended.
    assert book.observe(tap("s1", 2, 150)) == []
    assert book.observe(tap("s2", 2, 200, gift="gg")) == []
    assert book.close_sender("alice") == [tap("s2", 2, 200, gift="gg")]
