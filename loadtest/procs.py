"""Load processes: each runs one plan on its own event loop; the parent starts them, lets them
all begin at once, shows their counters live and merges their tallies.

The phases are the same for every plan: connect (then `ready`), wait for `go`, load for the
window, drain (then `drained`), wait for `finish` (every process has drained, so every answer
and credit is out), close, and send the tally. Every wait is bounded.
"""

import asyncio
import contextlib
import multiprocessing
import queue
import resource
import time
import traceback
from collections.abc import Callable
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from typing import Any, Protocol

import uvloop

from loadtest.tally import Tally

COUNTERS = ("connected", "sent", "acked", "errors", "frames", "credits")
POLL_S = 0.25
READY_TIMEOUT_S = 120.0
# After the window: drain, finish and close, in every process.
WRAP_UP_TIMEOUT_S = 60.0

Message = tuple[str, int, Any]


class Link:
    """A load process's side of the orchestration."""

    def __init__(
        self,
        index: int,
        counters: "SynchronizedArray[float]",
        messages: "multiprocessing.Queue[Message]",
        go: Event,
        finish: Event,
    ) -> None:
        self.index = index
        self._counters = counters
        self._messages = messages
        self._go = go
        self._finish = finish

    def report(self, values: dict[str, float]) -> None:
        base = self.index * len(COUNTERS)
        for i, name in enumerate(COUNTERS):
            self._counters[base + i] = values.get(name, 0.0)

    def ready(self) -> None:
        self._messages.put(("ready", self.index, None))

    def drained(self) -> None:
        self._messages.put(("drained", self.index, None))

    async def wait_go(self) -> None:
        if not await asyncio.to_thread(self._go.wait, READY_TIMEOUT_S):
            raise TimeoutError("the other load processes were not ready in time")

    async def wait_finish(self) -> None:
        if not await asyncio.to_thread(self._finish.wait, WRAP_UP_TIMEOUT_S):
            raise TimeoutError("the other load processes did not drain in time")


class Plan(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def duration_s(self) -> float: ...

    async def run(self, link: Link) -> Tally: ...


def raise_fd_limit() -> int:
    """Up to the hard limit: thousands of connections need as many descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def worker_main(
    plan: Plan,
    counters: "SynchronizedArray[float]",
    messages: "multiprocessing.Queue[Message]",
    go: Event,
    finish: Event,
) -> None:
    link = Link(plan.index, counters, messages, go, finish)
    try:
        raise_fd_limit()
        tally: Tally = uvloop.run(plan.run(link))
    except BaseException:
        messages.put(("failed", plan.index, traceback.format_exc()))
        return
    messages.put(("result", plan.index, tally))


class LoadFailed(RuntimeError):
    pass


Tick = Callable[[str, dict[str, float]], None]


class Processes:
    """The parent's side: start the plans' processes and walk them through the phases."""

    def __init__(self, plans: list[Plan], tick: Tick) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._plans = plans
        self._tick = tick
        self._counters: SynchronizedArray[float] = ctx.Array(
            "d", len(plans) * len(COUNTERS), lock=False
        )
        self._messages: multiprocessing.Queue[Message] = ctx.Queue()
        self._go = ctx.Event()
        self._finish = ctx.Event()
        self._processes = [
            ctx.Process(
                target=worker_main,
                args=(plan, self._counters, self._messages, self._go, self._finish),
                name=f"loadtest-{plan.index}",
                daemon=True,
            )
            for plan in plans
        ]
        self._started = 0.0

    def totals(self) -> dict[str, float]:
        out = dict.fromkeys(COUNTERS, 0.0)
        for p in range(len(self._plans)):
            for i, name in enumerate(COUNTERS):
                out[name] += self._counters[p * len(COUNTERS) + i]
        return out

    async def connect(self) -> None:
        """Start the processes; returns once every one has its connections open."""
        for process in self._processes:
            process.start()
        await self._collect("ready", "connecting", READY_TIMEOUT_S)

    async def load(self, sample: Callable[[float], None]) -> None:
        """Start the window everywhere at once; returns once every process has drained.
        `sample` gets the seconds since the start, a few times a second."""
        self._go.set()
        self._started = time.monotonic()
        window = max(plan.duration_s for plan in self._plans)
        await self._collect("drained", "load", window + WRAP_UP_TIMEOUT_S, sample)

    async def results(self, credits: bool) -> Tally:
        """With `credits`, first wait (bounded) until the hosts have seen a credit for every
        gift acknowledged: a starved server may deliver a credit well after its ack."""
        deadline = time.monotonic() + WRAP_UP_TIMEOUT_S
        while credits and time.monotonic() < deadline:
            totals = self.totals()
            self._tick("credits", totals)
            if totals["credits"] >= totals["acked"]:
                break
            await asyncio.sleep(POLL_S)
        self._finish.set()
        answers = await self._collect("result", "closing", WRAP_UP_TIMEOUT_S)
        return Tally.merged([answers[i] for i in sorted(answers)])

    def stop(self) -> None:
        """Release and end every process (on success they have already returned)."""
        self._go.set()
        self._finish.set()
        for process in self._processes:
            if process.pid is None:  # never started
                continue
            process.join(5.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)

    async def _collect(
        self,
        kind: str,
        phase: str,
        timeout_s: float,
        sample: Callable[[float], None] | None = None,
    ) -> dict[int, Any]:
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(answers) < len(self._processes):
            if time.monotonic() > deadline:
                raise LoadFailed(f"load processes: no '{kind}' from all in {timeout_s:.0f} s")
            self._tick(phase, self.totals())
            if sample is not None:
                sample(self.elapsed_s)
            with contextlib.suppress(queue.Empty):
                got, index, payload = await asyncio.to_thread(self._messages.get, True, POLL_S)
                if got == "failed":
                    raise LoadFailed(f"load process {index} failed:\n{payload}")
                if got != kind:
                    raise LoadFailed(f"load process {index}: '{got}' while waiting for '{kind}'")
                answers[index] = payload
                continue
            for process in self._processes:
                if process.exitcode not in (None, 0):
                    raise LoadFailed(f"{process.name} died with exit code {process.exitcode}")
        self._tick(phase, self.totals())
        return answers

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started if self._started else 0.0
