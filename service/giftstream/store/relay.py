"""The relay: credits every debited gift whose credit is missing (a crash between the halves),
creates every funded chest that is missing, settles the chests whose claim window closed, and
recounts the viewers of every live room (so that the share of a worker that died expires).

Credit is idempotent on the event id, so a relay that races the live path does no harm.
One worker at a time runs it, under a lock in the store.
"""

import logging
import secrets

import msgpack

from giftstream.errors import Refused
from giftstream.store import chests, keys, rooms
from giftstream.store.connection import Redis, read_hash, text
from giftstream.store.gifts import CreditRules, credit, settle

log = logging.getLogger(__name__)


async def store_time_ms(r: Redis) -> int:
    seconds, micros = await r.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def relay_once(r: Redis, rules: CreditRules, grace_ms: int) -> int:
    """Credit every outbox entry older than `grace_ms`; returns how many were re-applied."""
    now = await store_time_ms(r)
    applied = 0
    async for key in r.scan_iter(match=keys.OUTBOX_PATTERN, count=1000, _type="hash"):
        entries = await read_hash(r, text(key))
        for event, payload in entries.items():
            p = msgpack.unpackb(payload, raw=False)
            if now - int(p["ts"]) < grace_ms:
                continue
            if p.get("kind") == "chest":
                await chests.create(r, payload)
                applied += 1
                continue
            try:
                await credit(r, str(p["room"]), payload, rules)
            except Refused:  # the credit's one refusal: no such room
                log.error("outbox entry %s names a room that does not exist", event)
                continue
            await settle(r, str(p["from"]), event.decode())
            applied += 1
    return applied


async def relay_if_leader(r: Redis, rules: CreditRules, grace_ms: int, lease_ms: int) -> int:
    """Run one relay pass, and settle the chests that are due, if no other worker holds the
    lease."""
    token = secrets.token_hex(8)
    if not await r.set(keys.RELAY_LOCK, token, nx=True, px=lease_ms):
        return 0
    try:
        await chests.settle_due(r, await store_time_ms(r))
        await rooms.sweep_presence(r, f"relay-{token}")
        return await relay_once(r, rules, grace_ms)
    finally:
        if await r.get(keys.RELAY_LOCK) == token.encode():
            await r.delete(keys.RELAY_LOCK)
