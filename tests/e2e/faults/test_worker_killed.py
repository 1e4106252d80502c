"""Faults during gifting: a worker killed mid-storm.

The gifting clients and the checks of the books are in support/storm.py. Each test writes its
figures to a JSON file in its tmp dir and prints one line (`pytest -s`).
"""

import asyncio
import contextlib
import os
import random
import signal
import time
from pathlib import Path

from giftstream.store.embedded import EmbeddedValkey
from support import ServerProcess, eventually, serving, store
from support.storm import (
    SEED,
    STORM_ENV,
    STORM_S,
    Gifter,
    Storm,
    check_books,
    outboxes_empty,
    record,
    scene,
)

# -- (a) a worker killed during a storm ------------------------------------------------------


def worker_pids(server: ServerProcess) -> list[int]:
    """The uvicorn worker processes of `serve --workers N` (children of the server process)."""
    assert server.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.process.pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def connections_by_worker(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections on `port` each worker holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01" and int(parts[1].split(":")[1], 16) == port:
            inodes.add(parts[9])
    counts = {}
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    held += target.startswith("socket:[") and target[8:-1] in inodes
        counts[pid] = held
    return counts


WORKER_KILL_VIEWERS = 6
WORKER_KILL_GIFTS = 150  # per viewer


async def test_killing_one_of_two_workers_mid_storm_loses_no_acked_gift_and_charges_none_twice(
    fresh_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    url = fresh_valkey.url
    server = ServerProcess(url, env=STORM_ENV, workers=2)
    async with serving(server) as (server, api), store(url) as redis:
        host, room, viewers = await scene(api, WORKER_KILL_VIEWERS)
        gifters = [Gifter(v, f"w{i}", WORKER_KILL_GIFTS) for i, v in enumerate(viewers)]
        storm = Storm(server.ws_url, room, gifters, rng)
        running = asyncio.create_task(storm.run())
        try:
            await eventually(lambda: storm.acked >= storm.planned // 4, STORM_S, "a quarter acked")
            workers = await asyncio.to_thread(worker_pids, server)
            assert len(workers) == 2, workers
            held = await asyncio.to_thread(connections_by_worker, server.port, workers)
            # The worker holding the most connections (ties broken by the seeded source).
            victim = max(workers, key=lambda pid: (held[pid], rng.random()))
            acked_at_kill = storm.acked
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            await asyncio.wait_for(running, STORM_S)
            storm_end = time.monotonic()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        reconnects = sum(g.reconnects for g in gifters)
        assert reconnects >= 1, "the kill cut the connections of the killed worker's clients"
        assert all(len(g.acked) == g.planned for g in gifters), "every gift acked in the end"
        await eventually(lambda: outboxes_empty(redis, viewers), 30, "every debit credited")
        counts = await check_books(redis, url, room, host, storm)

        async def replaced() -> bool:
            pids = await asyncio.to_thread(worker_pids, server)
            return len(pids) == 2 and victim not in pids

        await eventually(replaced, 30, "uvicorn starts a worker in place of the killed one")
    record(
        tmp_path,
        "worker-kill",
        {
            "seed": SEED,
            "gifts": storm.planned,
            "acked_at_kill": acked_at_kill,
            "connections_cut": held[victim],
            "seconds_to_kill": round(killed_at - storm.started, 1),
            "seconds_after_kill": round(storm_end - killed_at, 1),
            **counts,
            # As check_books asserted:
            "acked_gifts_lost": 0,
            "charged_twice": 0,
        },
    )
