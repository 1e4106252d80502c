"""Waiting for what happens in the background: poll a condition with a deadline, never sleep as
synchronisation."""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# The deadline of a wait unless the caller says otherwise, and the pause between two looks.
WAIT_S = 15.0
POLL_S = 0.02

Condition = Callable[[], bool | Awaitable[bool]]


async def _holds(condition: Condition) -> bool:
    result = condition()
    if inspect.isawaitable(result):
        return await result
    return result


async def eventually(
    condition: Condition,
    within_s: float = WAIT_S,
    what: str = "the condition",
    every_s: float = POLL_S,
) -> float:
    """Poll `condition` (plain or async) every `every_s` until it holds: the seconds it took.
    Fails naming `what` at the deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await _holds(condition):
        assert loop.time() - started < within_s, f"not within {within_s} s: {what}"
        await asyncio.sleep(every_s)
    return loop.time() - started


async def settles(condition: Condition, within_s: float) -> bool:
    """Whether `condition` (plain or async) comes to hold within `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await _holds(condition):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def poll(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    within_s: float = WAIT_S,
    what: str = "the condition",
) -> T:
    """Call `probe` until `done` holds for its answer: that answer. Fails at the deadline with
    `what` and the last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        answer = await probe()
        if done(answer):
            return answer
        assert loop.time() < deadline, f"not within {within_s} s: {what}: {answer}"
        await asyncio.sleep(POLL_S)
