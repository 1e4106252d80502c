"""The one timer per event loop that checks every connection (realtime/connection.py's Watch):
each connection it holds is checked, a failing check stops no other, and the timer goes once
no connection is left."""

import asyncio
from typing import Any, cast

from giftstream.realtime import connection
from giftstream.realtime.connection import Connection, Watch
from support.waiting import eventually


class Checked:
    """A connection as the Watch sees it: what it is asked is `check(now)`."""

    def __init__(self, fails: bool = False) -> None:
        self.checks: list[float] = []
        self.fails = fails

    def check(self, now: float) -> None:
        self.checks.append(now)
        if self.fails:
            raise RuntimeError("this check fails")


def as_connection(checked: Checked) -> Connection:
    return cast(Connection, cast(Any, checked))


async def test_every_connection_is_checked_by_one_timer_and_a_failure_stops_no_other() -> None:
    loop = asyncio.get_running_loop()
    watch = connection._watch_of(loop)
    assert connection._watch_of(loop) is watch, "one Watch per loop"
    failing, fine = Checked(fails=True), Checked()
    for checked in (failing, fine):
        watch.add(as_connection(checked))
    await eventually(lambda: len(fine.checks) >= 2, what="two rounds of checks")
    assert len(failing.checks) >= 1
    watch.discard(as_connection(failing))
    watch.discard(as_connection(fine))
    assert loop not in connection._WATCHES, "no connection left: the Watch goes"
    assert watch._timer is None


async def test_a_watch_emptied_and_filled_again_checks_again() -> None:
    watch = Watch(asyncio.get_running_loop())
    checked = Checked()
    watch.add(as_connection(checked))
    watch.discard(as_connection(checked))
    watch.add(as_connection(checked))
    await eventually(lambda: len(checked.checks) >= 1, what="a check")
    watch.discard(as_connection(checked))
