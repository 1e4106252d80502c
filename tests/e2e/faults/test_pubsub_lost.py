"""Faults during gifting: a silent loss of the pub/sub connection between a worker and the store.

The gifting clients and the checks of the books are in support/storm.py. Each test writes its
figures to a JSON file in its tmp dir and prints one line (`pytest -s`).
"""

import asyncio
import time
from collections import deque
from pathlib import Path

from giftstream.store.embedded import EmbeddedValkey
from support import Client, ServerProcess, audit, eventually, serving
from support.proxy import Forwarder, Pair
from support.storm import (
    GIFT,
    RECV_S,
    STORM_ENV,
    Ack,
    Reader,
    joined_client,
    not_ready,
    ready,
    record,
    scene,
)

# -- (e) the pub/sub connection lost silently ------------------------------------------------


class StoreProxy(Forwarder):
    """A unix-socket proxy in front of Valkey that can partition the pub/sub connections: their
    bytes stop flowing both ways, and neither side sees a close (as when a network drops
    packets), while the command connections go on. `heal` cuts the partitioned connections."""

    def __init__(self, target: Path, path: Path) -> None:
        super().__init__()
        self.target = target
        self.path = path
        self.partitioned = False
        self.pubsub_connections = 0
        self._pubsub: set[Pair] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> "StoreProxy":
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        return self

    def partition(self) -> None:
        self.partitioned = True

    def heal(self) -> None:
        self.partitioned = False
        for pair in list(self._pubsub & self._pairs):
            pair.cut()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.target))

    def _passes(self, pair: Pair, chunk: bytes, from_server: bool) -> bool:
        if not from_server and pair not in self._pubsub and b"SUBSCRIBE" in chunk.upper():
            self._pubsub.add(pair)
            self.pubsub_connections += 1
        # A pub/sub connection's bytes are lost in the partition.
        return not (pair in self._pubsub and self.partitioned)


OUTAGE_GIFTS = 120


async def gift_many(client: Client, room: str, ids: list[str], window: int = 8) -> dict[str, Ack]:
    """Gifts over one joined connection, `window` in flight; their acks by event."""
    acks: dict[str, Ack] = {}
    todo, in_flight = deque(ids), set[str]()
    while todo or in_flight:
        while todo and len(in_flight) < window:
            rid = todo.popleft()
            await client.send({"t": "gift", "id": rid, "room": room, "gift": GIFT})
            in_flight.add(rid)
        frame = await client.recv(RECV_S)
        if frame["t"] in ("ack", "error") and frame.get("id") in in_flight:
            assert frame["t"] == "ack", frame
            acks[frame["event"]] = Ack(frame["event"], frame["coins"], time.monotonic())
            in_flight.discard(frame["id"])
    return acks


async def test_a_silently_lost_pubsub_connection_fails_readyz_and_missed_credits_are_replayed(
    fresh_valkey: EmbeddedValkey, short_tmp: Path, tmp_path: Path
) -> None:
    socket_file = Path(fresh_valkey.url.removeprefix("unix://"))
    proxy = await StoreProxy(socket_file, short_tmp / "proxy.sock").start()
    try:
        async with serving(ServerProcess(proxy.url, env=STORM_ENV)) as (server, api):
            host, room, (viewer,) = await scene(api, 1)
            reader = Reader(await joined_client(server, host, room))
            watcher = Reader(await joined_client(server, await api.user(), room))
            gifter = await joined_client(server, viewer, room)
            before = await gift_many(gifter, room, ["p-0", "p-1", "p-2"])
            await eventually(lambda: set(before) <= set(reader.credits), 10, "live credits")

            proxy.partition()
            # Detected: /readyz fails on the pub/sub check while the store itself answers.
            detected_s = await eventually(lambda: not_ready(api), 20, "/readyz fails")
            checks = (await api.http.get("/readyz")).json()["checks"]
            missed = await gift_many(gifter, room, [f"q-{i}" for i in range(OUTAGE_GIFTS)])
            delivered_during_outage = set(missed) & set(reader.credits)
            proxy.heal()
            recovered_s = await eventually(lambda: ready(api), 30, "/readyz is back")
            after = await gift_many(gifter, room, ["r-0", "r-1", "r-2"])
            await gifter.close()

            every = set(before) | set(missed) | set(after)
            await eventually(lambda: every <= set(reader.credits), 15, "every credit at the host")
            await eventually(lambda: every <= set(watcher.gifts), 15, "every gift at the viewer")
            # Once each, in offset order, and nothing after the last one.
            await reader.client.send({"t": "ping", "id": "fence"})
            await eventually(
                lambda: any(f.get("id") == "fence" for f in reader.frames), 10, "the fence"
            )
            credits = [f for f in reader.frames if f["t"] == "credit"]
            offsets = [f["offset"] for f in credits]
            await reader.close()
            await watcher.close()
    finally:
        await proxy.close()
    record(
        tmp_path,
        "pubsub-partition",
        {
            "gifts_during_outage": len(missed),
            "seconds_to_not_ready": round(detected_s, 2),
            "readyz_checks_during_outage": checks,
            "credits_delivered_live_during_outage": len(delivered_during_outage),
            "seconds_to_ready_after_heal": round(recovered_s, 2),
            "credits_at_host": len(credits),
            "pubsub_connections_made": proxy.pubsub_connections,
        },
    )
    code, report = await audit(fresh_valkey.url)
    assert code == 0 and "audit clean" in report, report
    assert checks == {"redis": True, "pubsub": False}
    assert not delivered_during_outage, "the partition did cut the live fan-out"
    assert proxy.pubsub_connections >= 2, "the hub made a new pub/sub connection"
    assert not reader.duplicates and len(credits) == len(every)
    assert offsets == sorted(offsets)
    assert all(n == 1 for n in watcher.gifts.values())
