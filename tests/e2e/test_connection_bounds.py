"""Bounded work and memory per connection: a client cannot make the server hold more for it
than its window of gifts in flight, its send queue, and a few seconds of waiting for it."""

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from giftstream.store.embedded import EmbeddedValkey
from support import SHARED_ENV, Api, Client, ServerProcess, running

# 200,000 gift frames pipelined on one connection grew the server by 318 MB when every frame
# became a task at once (issue 15). Read only as the window frees, they cost the window's
# gifts and what the sockets hold: this bound leaves room for the allocator's noise.
FLOOD_GIFTS = 200_000
FLOOD_RSS_BOUND_MB = 40


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid`, in MB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def own_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    with running(ServerProcess(valkey.url, env=SHARED_ENV)) as s:
        yield s


async def flood(client: Client, gifts: int, tag: str) -> int:
    """Send `gifts` gift frames to a room the client is not in, as fast as the connection
    takes them, while reading their answers; the number of `not_in_room` errors."""
    refused = 0

    async def read() -> None:
        nonlocal refused
        while refused < gifts:
            frame = msgpack.unpackb(await client.ws.recv(), raw=False)
            for f in frame["frames"] if frame["t"] == "batch" else [frame]:
                if f["t"] == "error" and f["code"] == "not_in_room":
                    refused += 1

    reading = asyncio.create_task(read())
    try:
        for n in range(gifts):
            await client.send_gift("nowhere", "rose", f"{tag}-{n}")
        await asyncio.wait_for(reading, 120)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    return refused


async def test_200000_gift_frames_on_one_connection_leave_server_memory_bounded(
    own_server: ServerProcess,
) -> None:
    assert own_server.process is not None
    pid = own_server.process.pid
    api = Api(own_server.base_url)
    try:
        user = await api.user(coins=0)
        client = await Client.open(own_server.ws_url)
        try:
            await client.auth(user)
            # A first flood warms the worker's pools, so that the figure after is the flood's.
            assert await flood(client, 5_000, "warm") == 5_000
            before = rss_mb(pid)
            assert await flood(client, FLOOD_GIFTS, "flood") == FLOOD_GIFTS
            after = rss_mb(pid)
        finally:
            await client.close()
    finally:
        await api.aclose()
    print(f"server RSS {before:.0f} -> {after:.0f} MB over {FLOOD_GIFTS} gift frames")
    assert after - before < FLOOD_RSS_BOUND_MB
