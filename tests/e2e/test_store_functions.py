"""The Redis Functions as a server loads them: every name prefixed `giftstream_` (no collision in
a shared server's namespace), an upgrade in place that leaves none of the old names, and the
relay's lock released by compare-and-delete."""

import asyncio
import re
import secrets
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster

from giftstream.domain.catalog import load_catalog
from giftstream.gifting import credit_rules
from giftstream.settings import Settings
from giftstream.store import keys, relay
from giftstream.store.connection import (
    FUNCTION_FILES,
    Redis,
    connect,
    function_sources,
    load_functions,
    text,
)
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.embedded_cluster import EmbeddedCluster
from support import ServerProcess, raw_connected, serving, store

PREFIX = "giftstream_"
REGISTERED = re.compile(r"register_function(?:\('|\{function_name = ')([a-z_]+)'")
# A deadline for a lock with a 1 ms lease to lapse.
LAPSE_S = 5.0


def declared_functions() -> set[str]:
    """Every function name the .lua files register."""
    return {name for src in function_sources().values() for name in REGISTERED.findall(src)}


def unprefixed_sources() -> list[str]:
    """The libraries as an earlier version registered them: the same, without the prefix."""
    return [
        REGISTERED.sub(lambda m: m.group(0).replace(PREFIX, "", 1), src)
        for src in function_sources().values()
    ]


def loaded(listing: list[dict[bytes, Any]]) -> dict[str, set[str]]:
    """FUNCTION LIST's reply (as redis-py parses it) as {library: {function, ...}}."""
    return {
        text(library[b"library_name"]): {text(f[b"name"]) for f in library[b"functions"]}
        for library in listing
    }


async def function_list(r: Redis) -> dict[str, set[str]]:
    return loaded(await r.execute_command("FUNCTION", "LIST"))


def test_every_library_and_function_the_lua_files_register_is_prefixed() -> None:
    names = declared_functions()
    assert "giftstream_lock_release" in names
    assert [n for n in names if not n.startswith(PREFIX)] == []
    libraries = [src.partition("\n")[0] for src in function_sources().values()]
    assert [lib for lib in libraries if not lib.startswith(f"#!lua name={PREFIX}")] == []


def test_every_function_is_described_by_name_in_its_files_header() -> None:
    folder = resources.files("giftstream.store") / "functions"
    for file in FUNCTION_FILES:
        src = folder.joinpath(file).read_text("utf-8")
        header = src[src.index("--[[") : src.index("]]")]
        for name in REGISTERED.findall(src):
            assert re.search(rf"^{name}\b", header, re.M), f"{file}: {name}"


async def test_a_server_started_on_a_store_with_the_old_names_leaves_only_prefixed_ones(
    fresh_valkey: EmbeddedValkey,
) -> None:
    async with store(fresh_valkey.url) as r:
        for source in unprefixed_sources():
            await r.execute_command("FUNCTION", "LOAD", "REPLACE", source)
        before = await function_list(r)
        assert "gift_debit" in before["giftstream_gifts"]
        async with serving(ServerProcess(fresh_valkey.url)):
            after = await function_list(r)
    assert all(library.startswith(PREFIX) for library in after)
    functions = set().union(*after.values())
    assert functions == declared_functions()


async def test_a_shared_server_holding_another_apps_functions_of_the_same_short_names_serves(
    fresh_valkey: EmbeddedValkey,
) -> None:
    other = (
        "#!lua name=otherapp\n"
        "redis.register_function('gift_debit', function() return 'theirs' end)\n"
        "redis.register_function('payout', function() return 'theirs' end)\n"
    )
    async with store(fresh_valkey.url) as r:
        await r.execute_command("FUNCTION", "LOAD", other)
        async with serving(ServerProcess(fresh_valkey.url)) as (server, api):
            host = await api.user(role="host")
            viewer = await api.user(coins=100)
            room = await api.open_room(host)
            async with raw_connected(server, viewer) as ws:
                await ws.join(room)
                ack = await ws.gift(room, "rose", "g-1")
            assert (ack["t"], ack["coins"]) == ("ack", 99)
        assert await r.execute_command("FCALL", "gift_debit", 0) == b"theirs"
        assert (await function_list(r))["otherapp"] == {"gift_debit", "payout"}


async def test_every_primary_of_a_cluster_holds_only_prefixed_functions(
    cluster: EmbeddedCluster, cluster_server: ServerProcess
) -> None:
    client = connect(cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        await client.initialize()
        for node in client.get_primaries():
            listing = await client.execute_command("FUNCTION", "LIST", target_nodes=node)
            functions = set().union(*loaded(listing).values())
            assert functions == declared_functions(), node.name
    finally:
        await client.aclose()


async def test_a_lock_taken_over_by_another_holder_is_not_deleted_by_the_old_holders_release(
    fresh_valkey: EmbeddedValkey,
) -> None:
    key = f"gs:test:lock:{secrets.token_hex(4)}"
    async with store(fresh_valkey.url) as r:
        await load_functions(r)
        assert await r.set(key, "old", nx=True, px=1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LAPSE_S
        while await r.exists(key):
            assert loop.time() < deadline, "the lease did not lapse"
            await asyncio.sleep(0.01)
        assert await r.set(key, "new", nx=True, px=60_000)

        assert await relay.release_lock(r, key, "old") is False
        assert await r.get(key) == b"new"
        assert await relay.release_lock(r, key, "new") is True
        assert await r.exists(key) == 0
        assert await relay.release_lock(r, key, "new") is False


async def test_the_relay_releases_its_own_lock_after_a_pass_and_not_another_workers(
    fresh_valkey: EmbeddedValkey,
) -> None:
    rules = credit_rules(load_catalog(None), Settings())
    async with store(fresh_valkey.url) as r:
        await load_functions(r)
        await relay.relay_if_leader(r, rules, grace_ms=0, lease_ms=60_000)
        assert await r.exists(keys.RELAY_LOCK) == 0

        assert await r.set(keys.RELAY_LOCK, "another-worker", px=60_000)
        assert await relay.relay_if_leader(r, rules, grace_ms=0, lease_ms=60_000) == 0
        assert await r.get(keys.RELAY_LOCK) == b"another-worker"
