"""`--profile DIR`: where the CPU of a gifting run goes, on both sides of the store's socket.

The server's processes are sampled by py-spy (an outside sampler: the server runs unchanged)
into collapsed stacks, one file per run and process, summarised as the functions that hold the
most samples, by themselves and with what they call. Valkey's own account comes from its
statistics, reset when the run starts: `INFO commandstats` (calls and µs per command) and
`FUNCTION STATS`.
"""

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import redis

from loadtest.procs import Tick

PY_SPY = Path(sys.executable).with_name("py-spy")
# Samples a second: enough for a profile of a few seconds, little for the sampled process.
RATE = 250
TOP = 30
STOP_TIMEOUT_S = 30.0
# "function (path/to/file.py:123)": the line number apart, so that a function is one row.
_LINE = re.compile(r"^(?P<name>.*) \((?P<path>.*?)(?::\d+)?\)$")


class Profile:
    """One run's profile: py-spy on each of `pids`, Valkey's statistics from `store_url`."""

    def __init__(self, directory: Path, label: str, pids: list[int], store_url: str | None):
        self.directory = directory
        self.stem = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        self.pids = pids
        self.store_url = store_url
        self._samplers: list[tuple[int, Path, subprocess.Popen[bytes]]] = []
        self._started = False
        self._stopped = False
        self.written: list[Path] = []

    def around_load(self, tick: Tick) -> Tick:
        """`tick`, sampling from the first moment of the load phase to its end."""

        def watched(phase: str, totals: dict[str, float]) -> None:
            if phase == "load" and not self._started:
                self._started = True
                self.start()
            elif phase != "load" and self._started and not self._stopped:
                self.stop()
            tick(phase, totals)

        return watched

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.store_url is not None:
            with redis.Redis.from_url(self.store_url) as r:
                r.config_resetstat()
        for pid in self.pids:
            stacks = self.directory / f"{self.stem}-server-{pid}.txt"
            command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(RATE)]
            command += ["--nonblocking", "--format", "raw", "--output", str(stacks)]
            sampler = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._samplers.append((pid, stacks, sampler))

    def stop(self) -> None:
        """Stop sampling and write the summaries (their paths in `written`)."""
        if self._stopped:
            return
        self._stopped = True
        written = self.written
        for pid, stacks, sampler in self._samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on an interrupt
            try:
                sampler.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
            if stacks.exists():
                summary = self.directory / f"{self.stem}-server-{pid}-top.txt"
                summary.write_text(summarise(stacks.read_text()))
                written += [stacks, summary]
        if self.store_url is not None:
            store = self.directory / f"{self.stem}-valkey.txt"
            store.write_text(valkey_stats(self.store_url))
            written.append(store)


def summarise(collapsed: str) -> str:
    """The functions with the most samples: by themselves (self) and with their callees
    (total), each as a share of all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "no samples\n"
    out = [f"{samples:,} samples at {RATE}/s", "", "self %  function"]
    out += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(TOP)]
    out += ["", "total %  function (with what it calls)"]
    out += [f"{100 * n / samples:7.1f}  {name}" for name, n in total.most_common(TOP)]
    return "\n".join(out) + "\n"


def _function(frame: str) -> str:
    found = _LINE.match(frame)
    if found is None:
        return frame
    path = found["path"]
    # From the package on: giftstream/gifting.py, redis/asyncio/client.py, asyncio/events.py.
    short = path.split("site-packages/")[-1].split("/lib/python3")[-1].lstrip("/0123456789.")
    return f"{found['name']} ({short})"


def valkey_stats(store_url: str) -> str:
    """Valkey's commands since the reset: calls, µs in all and per call; its Functions' stats."""
    with redis.Redis.from_url(store_url, decode_responses=True) as r:
        commands = r.info("commandstats")
        functions = r.execute_command("FUNCTION", "STATS")
    rows = sorted(commands.items(), key=lambda item: -int(item[1]["usec"]))
    out = ["command                         calls      µs in all   µs/call"]
    for name, stats in rows:
        calls, usec = int(stats["calls"]), int(stats["usec"])
        per_call = float(stats["usec_per_call"])
        out.append(f"{name.removeprefix('cmdstat_'):28} {calls:>8,} {usec:>14,} {per_call:>9.2f}")
    out += ["", f"FUNCTION STATS: {functions}"]
    return "\n".join(out) + "\n"
