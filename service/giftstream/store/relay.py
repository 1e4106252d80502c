"""The relay: credits every debited gift whose credit is missing (a crash between the halves),
creates every funded chest that is missing, settles the chests whose claim window closed, ends
the battles that are due and counts the battle scores a worker left behind, and recounts the
viewers of every live room (so that the share of a worker that died expires).

Credit is idempotent on the event id, so a relay that races the live path does no harm.
One worker at a time runs it, under a lock in the store.

The outboxes to look at come from the pending index (one sorted set per cluster slot, written by
the Functions that write an outbox entry), not from a SCAN of every key: an idle relay costs the
same with 2 million keys as with none. Outboxes written before the index existed are indexed by
one SCAN, once per store (`OUTBOX_INDEXED`).
"""

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgpack
from redis.asyncio.cluster import ClusterNode, RedisCluster

from giftstream.errors import Refused
from giftstream.store import battles, chests, keys, rooms
from giftstream.store.connection import Redis, fcall, read_hash, text
from giftstream.store.gifts import CreditRules, credit, settle

log = logging.getLogger(__name__)

# Index keys per EXISTS and `giftstream_outbox_pending` call (each blocks the store for ~1-2 ms
# with 2M keys), and users read per index key per pass (the rest wait for the next pass).
INDEX_KEYS_PER_CALL = 1024
USERS_PER_INDEX = 100
SCAN_COUNT = 1000


async def store_time_ms(r: Redis) -> int:
    seconds, micros = await r.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def relay_once(
    r: Redis, rules: CreditRules, grace_ms: int, stop: asyncio.Event | None = None
) -> int:
    """Credit every outbox entry older than `grace_ms`; returns how many were re-applied. Ends
    early, between outboxes, once `stop` is set."""
    now = await store_time_ms(r)
    applied = 0
    async for user in pending_users(r, now - grace_ms):
        if stop is not None and stop.is_set():
            break
        applied += await _relay_outbox(r, user, now, rules, grace_ms)
    return applied


async def _relay_outbox(r: Redis, user: str, now: int, rules: CreditRules, grace_ms: int) -> int:
    applied = 0
    entries = await read_hash(r, keys.outbox(user))
    if not entries:
        await settle(r, user)  # settled by a plain HDEL (an older worker): leave the index
    for event, payload in entries.items():
        p = msgpack.unpackb(payload, raw=False)
        if now - int(p["ts"]) < grace_ms:
            continue
        if p.get("kind") == "chest":
            await chests.create(r, payload)
            applied += 1
            continue
        try:
            credited = await credit(r, str(p["room"]), payload, rules)
            if credited.score is not None:  # a gift in a battle: its score too
                counted = await battles.score(r, credited.score)
                if counted is not None:
                    await battles.announce_score(r, counted, now)
        except Refused:  # the credit's one refusal: no such room
            log.error("outbox entry %s names a room that does not exist", event)
            continue
        await settle(r, user, event.decode())
        applied += 1
    return applied


async def pending_users(r: Redis, oldest_ms: int) -> AsyncIterator[str]:
    """Every user whose outbox has had an entry pending since `oldest_ms` or earlier."""
    for node, index_keys in _index_keys_by_node(r):
        for i in range(0, len(index_keys), INDEX_KEYS_PER_CALL):
            chunk = index_keys[i : i + INDEX_KEYS_PER_CALL]
            args: list[Any] = [
                "FCALL_RO",
                "giftstream_outbox_pending",
                0,
                oldest_ms,
                USERS_PER_INDEX,
            ]
            if node is None:
                # Most slots have nothing pending, and one EXISTS checks many keys (a single
                # server only: a cluster refuses a command across slots).
                if not await r.exists(*chunk):
                    continue
                found = await r.execute_command(*args, *chunk)
            else:
                found = await r.execute_command(*args, *chunk, target_nodes=node)
            for user in found[::2]:
                yield text(user)


def _index_keys_by_node(r: Redis) -> list[tuple[ClusterNode | None, list[str]]]:
    """The pending index keys, grouped by the node that holds them (None: a single server)."""
    if not isinstance(r, RedisCluster):
        return [(None, [keys.pending_index(slot) for slot in range(keys.SLOTS)])]
    by_node: dict[str, tuple[ClusterNode, list[str]]] = {}
    for slot in range(keys.SLOTS):
        node = r.nodes_manager.get_node_from_slot(slot)
        by_node.setdefault(node.name, (node, []))[1].append(keys.pending_index(slot))
    return list(by_node.values())


async def index_old_outboxes(r: Redis, stop: asyncio.Event | None = None) -> bool:
    """Put every outbox written before the pending index existed into it: one SCAN, once per
    store. True when done (now or before); False when `stop` cut it short (it resumes next
    time from the start)."""
    if await r.exists(keys.OUTBOX_INDEXED):
        return True
    now = await store_time_ms(r)
    async for found in _outbox_keys(r):
        if stop is not None and stop.is_set():
            return False
        for key in found:
            user = keys.user_from_account(text(key))
            # The entries' own times do not matter here: the relay looks at them.
            await r.zadd(keys.pending_outboxes(user), {user: now}, nx=True)
    await r.set(keys.OUTBOX_INDEXED, "1")
    return True


async def _outbox_keys(r: Redis) -> AsyncIterator[list[bytes | str]]:
    """Every outbox key, a SCAN batch at a time (on a cluster, as redis-py walks the nodes)."""
    if isinstance(r, RedisCluster):
        async for key in r.scan_iter(match=keys.OUTBOX_PATTERN, count=SCAN_COUNT, _type="hash"):
            yield [key]
        return
    cursor = 0
    while True:
        cursor, found = await r.scan(
            cursor, match=keys.OUTBOX_PATTERN, count=SCAN_COUNT, _type="hash"
        )
        yield found
        if cursor == 0:
            return


async def relay_if_leader(
    r: Redis, rules: CreditRules, grace_ms: int, lease_ms: int, stop: asyncio.Event | None = None
) -> int:
    """Run one relay pass, and settle the chests that are due, if no other worker holds the
    lease."""
    token = secrets.token_hex(8)
    if not await r.set(keys.RELAY_LOCK, token, nx=True, px=lease_ms):
        return 0
    try:
        await chests.settle_due(r, await store_time_ms(r))
        await rooms.sweep_presence(r, f"relay-{token}")
        if not await index_old_outboxes(r, stop):
            return 0
        applied = await relay_once(r, rules, grace_ms, stop)
        await battles.sweep(r, await store_time_ms(r), grace_ms)
        return applied
    finally:
        await release_lock(r, keys.RELAY_LOCK, token)


async def release_lock(r: Redis, key: str, token: str) -> bool:
    """Delete the lock `key` if `token` still holds it (compare and delete in one call); False
    if another worker took it over once it lapsed, or it is gone."""
    return bool(await fcall(r, "giftstream_lock_release", [key], [token]))
