"""Faults during gifting: the store killed and restarted mid-storm (AOF `always`, then
`everysec`).

The gifting clients and the checks of the books are in support/storm.py. Each test writes its
figures to a JSON file in its tmp dir and prints one line (`pytest -s`).
"""

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from giftstream.store.connection import command
from support import Client, ServerProcess, audit, crash, eventually, serving, store
from support.storm import (
    GIFT,
    READY_S,
    SEED,
    STORM_ENV,
    STORM_S,
    Ack,
    Gifter,
    Storm,
    check_books,
    ledger_gifts,
    not_ready,
    outboxes_empty,
    own_valkey,
    ready,
    record,
    scene,
)

# Valkey's everysec policy: an fsync each second, postponed up to one more second while the
# previous one runs: the writes of the last 2 s before a crash are at risk.
EVERYSEC_LOSS_WINDOW_S = 2.0


# -- (b, c) the store killed and restarted ---------------------------------------------------


STORE_KILL_VIEWERS = 4
STORE_KILL_GIFTS = 150  # per viewer
# With everysec, a longer storm killed once it has run for EVERYSEC_KILL_AFTER_S and acked half
# its gifts: most of the gifts acked before the crash are older than the loss window.
EVERYSEC_GIFTS = 1_000  # per viewer
EVERYSEC_KILL_AFTER_S = 3.0


async def waitaof(url: str) -> None:
    """Block until every write so far is fsynced to the AOF (the scene, before the storm)."""
    async with store(url) as redis:
        local, _ = await command(redis, "WAITAOF", 1, 0, 5000)
    assert local == 1


@dataclass
class StoreCrash:
    storm: Storm
    killed_at: float
    acked_at_kill: int
    acked_before_restart: dict[str, Ack]
    lost: list[str]
    not_ready_s: float
    ready_again_s: float
    counts: dict[str, int]


async def crash_the_store(
    data_dir: Path, aof_fsync: str, seed: int, gifts: int, kill_when: Callable[[Storm], bool]
) -> StoreCrash:
    """A storm through a server on an embedded Valkey that is killed (kill -9) mid-storm, when
    `kill_when` holds, and restarted on the same data directory; the server is left to recover
    by itself."""
    rng = random.Random(seed)
    with own_valkey(data_dir, aof_fsync) as valkey:
        url = valkey.url
        async with serving(ServerProcess(url, env=STORM_ENV)) as (server, api):
            host, room, viewers = await scene(api, STORE_KILL_VIEWERS)
            await waitaof(url)
            gifters = [Gifter(v, f"s{i}", gifts) for i, v in enumerate(viewers)]
            storm = Storm(server.ws_url, room, gifters, rng)
            running = asyncio.create_task(storm.run())
            try:
                await eventually(lambda: kill_when(storm), STORM_S, "the moment to kill")
                acked_at_kill = storm.acked
                killed_at = time.monotonic()
                await asyncio.to_thread(crash, valkey)
                # The server notices by itself...
                not_ready_s = await eventually(lambda: not_ready(api), READY_S, "/readyz fails")
                acked_before_restart = storm.acks()
                await asyncio.to_thread(valkey.start)
                # ...and recovers by itself.
                ready_again_s = await eventually(lambda: ready(api), READY_S, "/readyz is back")
                await asyncio.wait_for(running, STORM_S)
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            assert all(len(g.acked) == g.planned for g in gifters), "every gift acked in the end"
            # New gifts work after the recovery, from a new connection too.
            late = await Client.open(server.ws_url, max_queue=None)
            try:
                await late.auth(viewers[0])
                await late.join(room)
                ack = await late.gift(room, GIFT, "after-the-restart")
                assert ack["t"] == "ack", ack
            finally:
                await late.close()
            gifters[0].acked["after-the-restart"] = Ack(
                ack["event"], ack["coins"], time.monotonic()
            )
            async with store(url) as redis:
                ledgers = set()
                for g in gifters:
                    ledgers.update(await ledger_gifts(redis, g.user))
                lost = sorted(set(acked_before_restart) - ledgers)
                counts: dict[str, int] = {}
                await eventually(lambda: outboxes_empty(redis, viewers), 30, "every debit credited")
                if not lost:
                    counts = await check_books(redis, url, room, host, storm)
                else:  # the books must still balance, without the lost gifts
                    code, report = await audit(url)
                    assert code == 0 and "audit clean" in report, report
    return StoreCrash(
        storm,
        killed_at,
        acked_at_kill,
        acked_before_restart,
        lost,
        not_ready_s,
        ready_again_s,
        counts,
    )


async def test_valkey_killed_mid_storm_with_fsync_always_loses_no_acked_gift_and_recovers(
    short_tmp: Path, tmp_path: Path
) -> None:
    run = await crash_the_store(
        short_tmp / "data",
        "always",
        SEED,
        STORE_KILL_GIFTS,
        lambda storm: storm.acked >= storm.planned * 3 // 10,
    )
    record(
        tmp_path,
        "valkey-kill-always",
        {
            "seed": SEED,
            "gifts": run.storm.planned,
            "acked_at_kill": run.acked_at_kill,
            "acked_before_restart": len(run.acked_before_restart),
            "acked_gifts_lost": len(run.lost),
            "seconds_to_not_ready": round(run.not_ready_s, 2),
            "seconds_to_ready_again": round(run.ready_again_s, 2),
            **run.counts,
        },
    )
    assert run.lost == [], f"{len(run.lost)} acked gifts lost with appendfsync always"
    assert run.counts["acked"] == run.storm.planned + 1


async def test_valkey_killed_mid_storm_with_fsync_everysec_loses_at_most_the_acks_of_its_last_2_s(
    short_tmp: Path, tmp_path: Path
) -> None:
    run = await crash_the_store(
        short_tmp / "data",
        "everysec",
        SEED + 1,
        EVERYSEC_GIFTS,
        lambda storm: (
            time.monotonic() - storm.started >= EVERYSEC_KILL_AFTER_S
            and storm.acked >= storm.planned // 2
        ),
    )
    acks = run.acked_before_restart
    window_start = run.killed_at - EVERYSEC_LOSS_WINDOW_S
    at_risk = [event for event, ack in acks.items() if ack.at >= window_start]
    record(
        tmp_path,
        "valkey-kill-everysec",
        {
            "seed": SEED + 1,
            "gifts": run.storm.planned,
            "acked_at_kill": run.acked_at_kill,
            "acked_before_restart": len(acks),
            "acked_in_the_last_2_s": len(at_risk),
            "acked_gifts_lost": len(run.lost),
            "seconds_to_not_ready": round(run.not_ready_s, 2),
            "seconds_to_ready_again": round(run.ready_again_s, 2),
            **run.counts,
        },
    )
    # Only writes of the last fsync period can be lost: acks older than it never are.
    assert set(run.lost) <= set(at_risk), "a gift acked long before the crash was lost"
    assert len(run.lost) <= len(at_risk)
    if not run.lost:
        assert run.counts["acked"] == run.storm.planned + 1
