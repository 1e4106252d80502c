"""Stopping background work within a deadline, even when a cancel is lost (issue #21, item 1)."""

import asyncio
import logging

import pytest

from giftstream import shutdown

DEADLINE_S = 0.3


async def swallowing(cancels: int, stopped: list[int]) -> None:
    """Waits for ever, losing the first `cancels` cancels (as redis-py's wait_for can on 3.11)."""
    for _ in range(cancels):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(1)
    await asyncio.Event().wait()


async def test_a_task_that_loses_a_cancel_is_stopped_by_the_next_one() -> None:
    lost: list[int] = []
    task = asyncio.create_task(swallowing(1, lost))
    await asyncio.sleep(0)  # let it start waiting
    assert await shutdown.stop_task(task, DEADLINE_S, "a stubborn task")
    assert task.cancelled() and lost == [1]


async def test_a_task_that_loses_every_cancel_is_abandoned_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost: list[int] = []
    task = asyncio.create_task(swallowing(shutdown.CANCEL_ATTEMPTS, lost))
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="giftstream.shutdown"):
        assert not await shutdown.stop_task(task, DEADLINE_S, "a deaf task")
    assert not task.done() and len(lost) == shutdown.CANCEL_ATTEMPTS
    assert "a deaf task did not stop" in caplog.text and "abandoned" in caplog.text
    assert "a deaf task" in shutdown._abandoned
    shutdown._abandoned.remove("a deaf task")
    task.cancel()  # its last wait takes the cancel: the test leaves nothing running
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_shutdown_step_that_hangs_is_stopped_and_reported() -> None:
    assert await shutdown.finish(asyncio.sleep(0), DEADLINE_S, "a quick step")
    assert not await shutdown.finish(asyncio.Event().wait(), DEADLINE_S, "a hanging step")


async def test_a_step_that_fails_is_logged_and_the_shutdown_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing() -> None:
        raise RuntimeError("the store went away")

    with caplog.at_level(logging.ERROR, logger="giftstream.shutdown"):
        assert await shutdown.finish(failing(), DEADLINE_S, "closing the store")
    assert "closing the store failed" in caplog.text
