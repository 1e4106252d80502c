"""The filter of a user's gift request ids (functions/gifts.lua): an id whose stored answer is
gone is "cold" (ask the ledger of record) for its generation and the next, then forgotten, and a
bitmap of a past generation expires, or is cleared before it is used again: its memory stays one
size."""

import asyncio
from collections.abc import AsyncIterator

import msgpack
import pytest

from giftstream.domain.catalog import load_catalog
from giftstream.errors import ErrorCode, Refused
from giftstream.store import accounts, gifts, keys, rooms
from giftstream.store.connection import Redis, connect, load_functions
from giftstream.store.embedded import EmbeddedValkey

ROSE = load_catalog(None).gifts["rose"]
TTL_S = 2
RULES = gifts.DebitRules(
    idempotency_ttl_s=TTL_S,
    streak_timeout_ms=3000,
    gifts_per_s=1000.0,
    gift_burst=1000,
    filter_bits=65536,
)
WAIT_S = 4 * TTL_S + 5


@pytest.fixture
async def r(fresh_valkey: EmbeddedValkey) -> AsyncIterator[Redis]:
    client = connect(fresh_valkey.url)
    await load_functions(client)
    yield client
    await client.aclose()


async def generation(r: Redis) -> int:
    seconds, micros = await r.time()
    return (seconds * 1000 + micros // 1000) // (TTL_S * 1000)


async def wait_generation(r: Redis, at_least: int) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while await generation(r) < at_least:
        assert asyncio.get_running_loop().time() < deadline, "the store's clock did not move"
        await asyncio.sleep(0.05)


async def seen(r: Redis, rid: str) -> str | gifts.StoredAnswer:
    return await gifts.stored_answer(r, "v", rid, "fp", RULES)


async def test_an_id_is_cold_for_its_generation_and_the_next_then_forgotten_and_cleared(
    r: Redis,
) -> None:
    await accounts.create_user(r, "v", "n", "US", "viewer", 100, 0, 30)
    await accounts.create_user(r, "h", "n", "US", "host", 0, 0, 30)
    room = (await rooms.open_room(r, "h", True, "US")).room

    async def debit(rid: str) -> None:
        req = gifts.DebitRequest(rid, "fp", f"e-{rid}", "v", "n", room, "h", ROSE, 1, 1)
        assert await gifts.debit(r, req, RULES) is not None

    first = await generation(r)
    await debit("x")
    assert isinstance(await seen(r, "x"), gifts.StoredAnswer)
    await r.delete(keys.gift_request("v", "x"))  # as the archiver does once it is archived
    assert await seen(r, "x") == "cold"
    assert await seen(r, "never") == "new"
    await wait_generation(r, first + 1)
    assert await seen(r, "x") == "cold"  # the previous generation is still checked
    slot = keys.gift_filters("v")[first % 2]
    size = await r.strlen(slot)
    assert size == 8 + RULES.filter_bits // 8
    # A bitmap that outlives its generation (here: its expiry removed) is cleared when reused.
    await r.persist(slot)
    await wait_generation(r, first + 2)
    assert await seen(r, "x") == "new"  # past the ttl: forgotten
    await debit("y")  # generation first + 2 reuses the bitmap of generation first
    assert await r.strlen(slot) == size
    assert await r.bitcount(slot, 8, -1) <= 3  # only y's positions: x's were cleared
    assert await seen(r, "y") != "new"
    assert 0 < await r.pttl(slot) <= 2 * TTL_S * 1000  # until the end of the next generation


async def test_an_answer_stored_before_the_hash_is_still_read_with_its_whole_fingerprint(
    r: Redis,
) -> None:
    """Stored answers written before this version (a map with the whole fingerprint) live out
    their ttl after an upgrade: a retry still gets its ack, other content a conflict."""
    old = msgpack.packb({"fp": "room\x1frose\x1f1", "event": "e-old", "balance": 7})
    await r.set(keys.gift_request("v", "old"), old, ex=60)
    assert await gifts.stored_answer(r, "v", "old", "room\x1frose\x1f1", RULES) == (
        gifts.StoredAnswer("e-old", 7)
    )
    with pytest.raises(Refused) as refused:
        await gifts.stored_answer(r, "v", "old", "room\x1frose\x1f2", RULES)
    assert refused.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
