"""The relay's index of pending outboxes (issue #21, item 6): written by the debit in the
viewer's own slot, cleared by the settle, read by the relay instead of a SCAN of every key; and
an ended room's history expires."""

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from giftstream.domain.catalog import load_catalog
from giftstream.gifting import credit_rules
from giftstream.settings import Settings
from giftstream.store import accounts, gifts, keys, relay, rooms
from giftstream.store.connection import Redis, connect, load_functions, read_hash
from giftstream.store.embedded import EmbeddedValkey
from support import Api, Client, ServerProcess, User, bearer, serving

CATALOG = load_catalog(None)
ROSE = CATALOG.gifts["rose"]
CREDIT = credit_rules(CATALOG, Settings())
DEBIT = gifts.DebitRules(
    idempotency_ttl_s=3600,
    streak_timeout_ms=3000,
    gifts_per_s=100.0,
    gift_burst=100,
    filter_bits=65536,
)
EXPIRY_WAIT_S = 15.0


@pytest.fixture(params=["valkey", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A client of an empty Valkey, or of the shared cluster, with the Functions loaded."""
    if request.param == "valkey":
        url: str = request.getfixturevalue("fresh_valkey").url
    else:
        url = request.getfixturevalue("cluster").url
    client = connect(url)
    await load_functions(client)
    yield client
    await client.aclose()


async def gift_debited(r: Redis) -> tuple[str, str, gifts.Debited]:
    """A host's room and a viewer whose rose is debited and not credited: (viewer, room, debit)."""
    tag = secrets.token_hex(4)
    host, viewer = f"h{tag}", f"v{tag}"
    for user, role in ((host, "host"), (viewer, "viewer")):
        await accounts.create_user(r, user, "n", "US", role, 100, 0, 30)
    room = (await rooms.open_room(r, host, True, "US")).room
    request = gifts.DebitRequest(
        f"g{tag}", "fp", f"e{tag}", viewer, "n", room, host, ROSE, 1, ROSE.coins
    )
    debited = await gifts.debit(r, request, DEBIT)
    assert debited is not None, "a new id's debit is never cold here: the filter is empty"
    return viewer, room, debited


async def pending(r: Redis, viewer: str) -> float | None:
    score: float | None = await r.zscore(keys.pending_outboxes(viewer), viewer)
    return score


async def test_a_debit_indexes_the_outbox_in_the_viewers_slot_and_the_settle_clears_it(
    store: Redis,
) -> None:
    viewer, room, debited = await gift_debited(store)
    index = keys.pending_outboxes(viewer)
    assert keys.key_slot(index) == keys.key_slot(keys.outbox(viewer)) == key_slot(index.encode())
    assert await pending(store, viewer) is not None
    await gifts.credit(store, room, debited.payload or b"", CREDIT)
    await gifts.settle(store, viewer, debited.event)
    assert await pending(store, viewer) is None
    assert await store.exists(index, keys.outbox(viewer)) == 0, "nothing left behind"


async def test_the_relay_finds_a_gift_left_between_debit_and_credit_through_the_index(
    store: Redis,
) -> None:
    viewer, room, _ = await gift_debited(store)
    found = [user async for user in relay.pending_users(store, 2**62)]
    assert viewer in found
    assert await relay.relay_once(store, CREDIT, grace_ms=0) >= 1
    assert int((await read_hash(store, keys.room(room)))[b"diamonds"]) == ROSE.coins
    assert await store.hlen(keys.outbox(viewer)) == 0
    assert await pending(store, viewer) is None


async def test_an_index_entry_whose_outbox_was_emptied_by_a_plain_hdel_is_tidied(
    store: Redis,
) -> None:
    """An older worker settles with HDEL alone: the relay drops the stale index entry."""
    viewer, room, debited = await gift_debited(store)
    await gifts.credit(store, room, debited.payload or b"", CREDIT)
    await store.hdel(keys.outbox(viewer), debited.event)
    assert await relay.relay_once(store, CREDIT, grace_ms=0) == 0
    assert await pending(store, viewer) is None


async def scans(r: Redis) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


async def test_outboxes_of_older_versions_are_indexed_by_one_scan_then_the_relay_never_scans(
    fresh_valkey: EmbeddedValkey,
) -> None:
    r = connect(fresh_valkey.url)
    try:
        await load_functions(r)
        viewer, room, _ = await gift_debited(r)
        await r.zrem(keys.pending_outboxes(viewer), viewer)  # as an older version debited
        assert await relay.relay_if_leader(r, CREDIT, 0, 5000) == 1
        assert int((await read_hash(r, keys.room(room)))[b"diamonds"]) == ROSE.coins
        assert await r.get(keys.OUTBOX_INDEXED) == b"1"
        before = await scans(r)
        assert before > 0, "the first pass scanned for old outboxes"
        await gift_debited(r)
        for _ in range(3):
            await relay.relay_if_leader(r, CREDIT, 0, 5000)
        assert await scans(r) == before, "later passes read the index only"
    finally:
        await r.aclose()


# -- an ended room's history -------------------------------------------------------------------


async def room_with_history(api: Api, ws_url: str) -> tuple[str, User]:
    host, viewer = await api.user(role="host"), await api.user(coins=10)
    room = await api.open_room(host)
    ws = await Client.open(ws_url)
    try:
        await ws.auth(viewer)
        await ws.join(room)
        assert (await ws.gift(room, "rose", "h-1"))["t"] == "ack"
    finally:
        await ws.close()
    return room, host


async def test_an_ended_rooms_history_expires_and_going_live_again_keeps_it(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    room, host = await room_with_history(api, server.ws_url)
    events = keys.room_events(room)
    assert await redis.pttl(events) == -1, "a live room's history does not expire"
    ended = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(host))
    assert ended.status_code == 200
    ttl_ms = await redis.pttl(events)
    assert 0 < ttl_ms <= Settings().room_history_ttl_s * 1000
    reopened = await api.http.post("/v1/rooms", headers=bearer(host))
    assert reopened.json()["room"] == room
    assert await redis.pttl(events) == -1, "live again: the history is kept"


async def test_an_ended_rooms_history_is_deleted_after_the_setting(
    fresh_valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_ROOM_HISTORY_TTL_S": "1"}
    async with serving(ServerProcess(fresh_valkey.url, env=env)) as (server, api):
        room, host = await room_with_history(api, server.ws_url)
        r = connect(fresh_valkey.url)
        try:
            assert await r.exists(keys.room_events(room)) == 1
            ended = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(host))
            assert ended.status_code == 200
            deadline = asyncio.get_running_loop().time() + EXPIRY_WAIT_S
            while await r.exists(keys.room_events(room)):
                assert asyncio.get_running_loop().time() < deadline, "the history was kept"
                await asyncio.sleep(0.1)
            assert await r.exists(keys.room(room), keys.room_ledger(room)) == 2, "money stays"
        finally:
            await r.aclose()


async def test_the_one_time_scan_stops_between_batches_once_told_to_and_resumes_later(
    fresh_valkey: EmbeddedValkey,
) -> None:
    r = connect(fresh_valkey.url)
    try:
        await load_functions(r)
        viewer, _, _ = await gift_debited(r)
        await r.zrem(keys.pending_outboxes(viewer), viewer)  # as an older version debited
        stop = asyncio.Event()
        stop.set()
        assert not await relay.index_old_outboxes(r, stop)
        assert await r.exists(keys.OUTBOX_INDEXED) == 0, "not marked done"
        assert await relay.index_old_outboxes(r)
        assert await pending(r, viewer) is not None
    finally:
        await r.aclose()
