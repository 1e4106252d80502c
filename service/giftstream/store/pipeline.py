"""Auto-pipelining: the commands that any number of connections issue while the store is busy
go to it together, as one pipeline (one write, one read of all the replies).

A gift is two round trips on its path (debit, then credit); under load, hundreds of gifts share
each of them, and the per-command cost of the client (a pooled connection, a timeout, a system
call each) is paid once per pipeline instead. Commands are not transactions together: each
Function is atomic on its own, and its reply (or its error) goes to its own caller.

`defer` queues a command nobody waits for (settling a credited gift's outbox entry): it rides
with the next pipeline, or goes after `linger_s` when no other command comes.
"""

import asyncio
import logging
from typing import Any

from giftstream import metrics
from giftstream.store.connection import Redis

log = logging.getLogger(__name__)

_Queued = tuple[tuple[Any, ...], asyncio.Future[Any] | None]


class AutoPipeline:
    def __init__(
        self, redis: Redis, max_in_flight: int, max_commands: int, linger_s: float
    ) -> None:
        self._redis = redis
        self._max_in_flight = max_in_flight
        self._max_commands = max_commands
        self._linger_s = linger_s
        self._queued: list[_Queued] = []
        self._waited = 0  # queued commands that someone awaits
        self._in_flight = 0
        self._flush_soon = False
        self._linger: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute_command(self, *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queued.append((args, future))
        self._waited += 1
        self._schedule()
        return await future

    def defer(self, *args: Any) -> None:
        """Send `args` with the next pipeline; its reply is not awaited (a failure is logged)."""
        self._queued.append((args, None))
        self._arm_linger()

    async def aclose(self) -> None:
        """Send what is queued and wait for every pipeline in flight."""
        while self._queued or self._tasks:
            if self._queued:
                self._flush()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _schedule(self) -> None:
        # Commands issued in this turn of the event loop go together; while `max_in_flight`
        # pipelines are out, more commands gather for the next one.
        if not self._flush_soon and self._in_flight < self._max_in_flight:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _arm_linger(self) -> None:
        """Send what is queued after `linger_s`, unless a pipeline takes it first."""
        if self._queued and self._linger is None and not self._flush_soon:
            self._linger = asyncio.get_running_loop().call_later(self._linger_s, self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        while self._queued and self._in_flight < self._max_in_flight:
            taken, self._queued = (
                self._queued[: self._max_commands],
                self._queued[self._max_commands :],
            )
            self._waited -= sum(1 for _, future in taken if future is not None)
            self._in_flight += 1
            task = asyncio.create_task(self._send(taken))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._arm_linger()

    async def _send(self, taken: list[_Queued]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for args, _ in taken:
                pipe.execute_command(*args)
            metrics.REDIS_ROUND_TRIPS.inc()
            metrics.REDIS_COMMANDS.inc(len(taken))
            replies = await pipe.execute(raise_on_error=False)
        except Exception as e:  # the connection failed: every command of it fails
            for args, future in taken:
                _fail(future, args, e)
        else:
            for (args, future), reply in zip(taken, replies, strict=True):
                if isinstance(reply, Exception):
                    _fail(future, args, reply)
                elif future is not None and not future.done():
                    future.set_result(reply)
        finally:
            self._in_flight -= 1
            if self._waited:
                self._schedule()
            else:
                self._arm_linger()


def _fail(future: asyncio.Future[Any] | None, args: tuple[Any, ...], error: Exception) -> None:
    if future is None:
        log.warning("deferred %s failed (%s)", args[0], error)
    elif not future.done():
        future.set_exception(error)
