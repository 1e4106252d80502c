"""The service on a Valkey Cluster: Functions on every primary, keys spread over the shards, and
a primary's fail-over in the middle of gifting that loses and doubles nothing."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from giftstream.store import keys
from giftstream.store.connection import Redis, connect
from giftstream.store.embedded_cluster import EmbeddedCluster, command_to_node
from support import (
    SHARED_ENV,
    Api,
    Client,
    Frame,
    ServerProcess,
    User,
    audit,
    running,
    temporary_cluster,
)

GIFT_PRICE = 1
GIFTS_PER_VIEWER = 40
RETRY_S = 0.05
DEADLINE_S = 60.0


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of the test's own: a fail-over changes its topology."""
    with temporary_cluster() as nodes:
        yield nodes


@pytest.fixture
async def cluster_client(own_cluster: EmbeddedCluster) -> AsyncIterator[Redis]:
    client = connect(own_cluster.url)
    await client.initialize()
    yield client
    await client.aclose()


def test_functions_are_loaded_on_every_primary(
    cluster: EmbeddedCluster, cluster_server: ServerProcess
) -> None:
    primaries = cluster.primary_ports()
    assert len(primaries) == 3
    for port in primaries:
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            # Each library comes as a flat list of field names and values.
            libraries = {
                dict(zip(lib[::2], lib[1::2], strict=True))[b"library_name"]
                for lib in node.function_list()
            }
        finally:
            node.close()
        assert {b"giftstream_gifts", b"giftstream_wallet", b"giftstream_chests"} <= libraries


async def test_users_and_rooms_spread_over_the_shards(
    cluster: EmbeddedCluster, cluster_server: ServerProcess
) -> None:
    api = Api(cluster_server.base_url)
    try:
        hosts = [await api.user(role="host") for _ in range(12)]
        rooms = [await api.open_room(h) for h in hosts]
    finally:
        await api.aclose()
    client = connect(cluster.url)
    try:
        nodes = set()
        for room, host in zip(rooms, hosts, strict=True):
            assert await client.exists(keys.room(room)) == 1
            node = client.get_node_from_key(keys.room(room))  # type: ignore[union-attr]
            assert node is not None
            nodes.add(node.port)
            assert await client.exists(keys.account(host.user)) == 1
    finally:
        await client.aclose()
    assert len(nodes) >= 2


async def gift_until_acked(ws: Client, room: str, request_id: str) -> Frame:
    """A correct client: the same id again until the gift is answered, whatever happens."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        answer = await ws.gift(room, "rose", request_id)
        if answer["t"] == "ack":
            return answer
        # A fail-over is the store unavailable for a while: the outcome is unknown, re-send.
        assert answer["code"] == "unavailable" and answer["retry"] is True, answer
        assert loop.time() < deadline, "the gift was never acked"
        await asyncio.sleep(RETRY_S)


async def test_a_primary_failing_over_during_gifting_loses_and_doubles_nothing(
    own_cluster: EmbeddedCluster, cluster_client: Redis
) -> None:
    env = {**SHARED_ENV, "GIFTSTREAM_RELAY_GRACE_MS": "500", "GIFTSTREAM_RELAY_INTERVAL_S": "0.2"}
    with running(ServerProcess(own_cluster.url, env=env)) as server:
        api = Api(server.base_url)
        try:
            host = await api.user(role="host")
            room = await api.open_room(host)
            viewers: list[User] = [await api.user(coins=1000) for _ in range(3)]
            host_ws = await Client.open(server.ws_url)
            await host_ws.auth(host)
            await host_ws.join(room)
            clients = [await Client.open(server.ws_url) for _ in viewers]
            for ws, viewer in zip(clients, viewers, strict=True):
                await ws.auth(viewer)
                await ws.join(room)
            room_node = cluster_client.get_node_from_key(keys.room(room))  # type: ignore[union-attr]
            assert room_node is not None
            replica = own_cluster.replica_of(int(room_node.port))
            half = asyncio.Event()

            async def storm(ws: Client, n: int) -> list[Frame]:
                acks = []
                for i in range(GIFTS_PER_VIEWER):
                    if i == GIFTS_PER_VIEWER // 2 and n == 0:
                        half.set()
                    acks.append(await gift_until_acked(ws, room, f"v{n}-{i}"))
                return acks

            async def fail_over() -> None:
                await half.wait()
                assert command_to_node(replica, "CLUSTER", "FAILOVER") == "OK"

            storms = asyncio.gather(*(storm(ws, n) for n, ws in enumerate(clients)))
            batches, _ = await asyncio.gather(storms, fail_over())
            acks = [a for batch in batches for a in batch]
            assert "role:master" in command_to_node(replica, "INFO", "replication")

            credits: set[str] = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while len(credits) < len(acks):
                frame, _ = await host_ws.recv_until(lambda f: f["t"] == "credit", timeout=30)
                credits.add(frame["event"])
                assert loop.time() < deadline
            ready = await api.http.get("/readyz")
            for ws in [host_ws, *clients]:
                await ws.close()
            wallets = [await api.wallet(v) for v in viewers]
            host_wallet = await api.wallet(host)
        finally:
            await api.aclose()

    assert len({a["event"] for a in acks}) == len(acks) == 3 * GIFTS_PER_VIEWER
    assert credits == {a["event"] for a in acks}
    assert [w["coins"] for w in wallets] == [1000 - GIFTS_PER_VIEWER * GIFT_PRICE] * 3
    assert host_wallet["diamonds"] == len(acks) * GIFT_PRICE
    assert ready.status_code == 200, ready.text
    code, report = await audit(own_cluster.url)
    assert code == 0, report
