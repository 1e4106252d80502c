"""Stopping background work within a deadline, whatever the work does with the cancel.

A cancel can be lost: redis-py wraps socket operations in `asyncio.wait_for`, and on Python 3.11
a cancel that lands as the inner operation completes is swallowed, so a task awaited after one
`cancel()` may never end (a worker then hangs in its shutdown forever). So: cancel, wait a
share of the deadline, cancel again, and in the end abandon the task with a log line — and, as
the event loop's own teardown would wait for it again, make sure the process exits anyway.
"""

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)

CANCEL_ATTEMPTS = 3
# What this process abandoned (for exit_if_abandoned).
_abandoned: list[str] = []
# Exit status of a process that had to abandon a task and was still alive this long after.
ABANDONED_EXIT_STATUS = 70


async def stop_task(task: asyncio.Task[Any], deadline_s: float, what: str) -> bool:
    """Cancel `task` and wait for it to end, for at most `deadline_s`; True if it ended."""
    for _ in range(CANCEL_ATTEMPTS):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=deadline_s / CANCEL_ATTEMPTS)
    if not task.done():
        log.error(
            "%s did not stop within %.1f s of being cancelled %d times; abandoned",
            what,
            deadline_s,
            CANCEL_ATTEMPTS,
        )
        _abandoned.append(what)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed while stopping", what, exc_info=task.exception())
    return True


async def finish(work: Awaitable[Any], deadline_s: float, what: str) -> bool:
    """Run `work` (a step of a shutdown) for at most `deadline_s`, then stop it as stop_task
    does; True if it completed in time."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task}, timeout=deadline_s)
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())
        return True
    log.error("%s took over %.1f s; stopping it", what, deadline_s)
    await stop_task(task, deadline_s, what)
    return False


def exit_if_abandoned(after_s: float) -> None:
    """If a task was abandoned, exit the process `after_s` from now unless it has exited by then:
    the event loop's teardown cancels and awaits every task left, and would wait for ever."""
    if not _abandoned:
        return

    def hard_exit() -> None:
        log.error("still running %.1f s after abandoning a task: exiting now", after_s)
        logging.shutdown()
        os._exit(ABANDONED_EXIT_STATUS)

    timer = threading.Timer(after_s, hard_exit)
    timer.daemon = True
    timer.start()
