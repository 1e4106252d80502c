"""The embedded Valkey belongs to the `serve` that started it: it stops when that server is
killed with -9, and one left by a dead owner is stopped and replaced by the next start, with its
data kept (issue #21, item 5)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from giftstream.store.embedded import OWNER_NAME, PID_NAME, EmbeddedValkey, is_running
from support import ServerProcess, eventually, serving

GONE_S = 15.0


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child of this process counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


async def test_killing_the_server_with_9_stops_its_valkey_and_the_data_survives(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    async with serving(ServerProcess(redis_url=None, data_dir=data)) as (first, api):
        user = await api.user(coins=77)
        valkey_pid = int((data / PID_NAME).read_text())
        assert first.process is not None
        assert int((data / OWNER_NAME).read_text()) == first.process.pid
        first.process.send_signal(signal.SIGKILL)
        first.wait_exit()
        await eventually(
            lambda: not pid_alive(valkey_pid), GONE_S, "the Valkey of the killed server to stop"
        )
    assert not is_running(data)

    async with serving(ServerProcess(redis_url=None, data_dir=data)) as (_, again):
        assert (await again.wallet(user))["coins"] == 77
    assert not is_running(data), "the restarted server stopped the Valkey it started"


async def test_a_valkey_whose_owner_died_is_stopped_and_replaced_by_the_next_start(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    async with serving(ServerProcess(redis_url=None, data_dir=data)) as (_, api):
        user = await api.user(coins=5)
    # A Valkey left running on the data directory, as an older version left it: owner gone.
    orphan = EmbeddedValkey(data)
    orphan.start()
    try:
        (data / OWNER_NAME).write_text(f"{dead_pid()}\n")
        (data / PID_NAME).unlink()  # older versions wrote no pid file
        async with serving(ServerProcess(redis_url=None, data_dir=data)) as (server, api):
            assert orphan.process is not None and orphan.process.wait(GONE_S) == 0
            assert server.process is not None
            assert int((data / OWNER_NAME).read_text()) == server.process.pid
            assert (await api.wallet(user))["coins"] == 5
        assert not is_running(data), "the server stopped the Valkey it now owns"
    finally:
        orphan.stop()


async def test_a_second_server_shares_the_valkey_of_a_live_owner_and_leaves_it_running(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    owner = EmbeddedValkey(data)
    owner.start()
    try:
        async with serving(ServerProcess(redis_url=None, data_dir=data)) as (_, api):
            await api.user(coins=1)
        assert is_running(data) and int((data / OWNER_NAME).read_text()) == os.getpid()
    finally:
        owner.stop()
