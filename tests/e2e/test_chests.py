"""Treasure chests end to end: funding once, who may claim and when, the exact split among many
concurrent claimants, the return of an unclaimed chest, and a clean audit after."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from giftstream.store.embedded import EmbeddedValkey
from support import Api, Client, Frame, ServerProcess, User, audit, member, poll, running, serving

COUNTDOWN_MS = 800
CLAIM_MS = 2500
# Short windows, and a relay that settles closed chests every 0.1 s.
CHEST_ENV = {
    "GIFTSTREAM_CHEST_COUNTDOWN_MS": str(COUNTDOWN_MS),
    "GIFTSTREAM_CHEST_CLAIM_MS": str(CLAIM_MS),
    "GIFTSTREAM_RELAY_INTERVAL_S": "0.1",
    "GIFTSTREAM_GIFT_RATE_PER_S": "100000",
    "GIFTSTREAM_GIFT_BURST": "1000000",
}
# A deadline for what happens in the background: opening, settling, paying.
SETTLE_S = 15.0
POLL_S = 0.02


@pytest.fixture(scope="module")
def chest_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    with running(ServerProcess(valkey.url, env=CHEST_ENV)) as s:
        yield s


@pytest.fixture
async def chest_api(chest_server: ServerProcess) -> AsyncIterator[Api]:
    async with Api(chest_server.base_url) as client:
        yield client


async def drop(client: Client, room: str, rid: str, coins: int) -> Frame:
    return await client.request(
        {"t": "drop_chest", "id": rid, "room": room, "coins": coins}, "dropped"
    )


async def claim(client: Client, room: str, chest: str, rid: str) -> Frame:
    return await client.request({"t": "claim", "id": rid, "room": room, "chest": chest}, "claimed")


async def claim_once_open(client: Client, room: str, chest: str) -> Frame:
    """Claim, again and again while the chest is not open yet; the first other answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    attempt = 0
    while True:
        answer = await claim(client, room, chest, f"open-{attempt}")
        if answer.get("code") != "chest_not_open":
            return answer
        assert loop.time() < deadline, "the chest did not open in time"
        attempt += 1
        await asyncio.sleep(POLL_S)


def refused(answer: Frame, code: str, rid: str) -> None:
    assert (answer["t"], answer.get("code"), answer.get("id")) == ("error", code, rid), answer


def chest_result(chest: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "chest_result" and f["chest"] == chest


async def coins_become(api: Api, expected: dict[str, tuple[User, int]]) -> None:
    """Poll the wallets until each user holds the expected coins (payouts follow the result)."""

    async def held() -> dict[str, int]:
        return {name: (await api.wallet(user))["coins"] for name, (user, _) in expected.items()}

    wanted = {name: coins for name, (_, coins) in expected.items()}
    await poll(held, lambda coins: coins == wanted, SETTLE_S, "the payouts")


def assert_audit_clean(code: int, report: str) -> None:
    assert code == 0, report
    assert "audit clean" in report, report
    assert "+ in chests 0\n" in report, report


# -- funding -----------------------------------------------------------------------------------


async def test_a_drop_is_charged_once_even_when_retried_and_extras_members_see_one_chest(
    chest_server: ServerProcess, chest_api: Api
) -> None:
    api = chest_api
    host = await api.user(role="host")
    dropper = await api.user(coins=500)
    gifter = await api.user(coins=1)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        extras = await member(stack, chest_server, await api.user(), room, extras=True)
        plain = await member(stack, chest_server, await api.user(), room)
        dropper_ws = await member(stack, chest_server, dropper, room)

        first = await drop(dropper_ws, room, "d-1", 120)
        retry = await drop(dropper_ws, room, "d-1", 120)
        other = await drop(dropper_ws, room, "d-1", 50)

        assert first["t"] == "dropped", first
        assert (first["id"], first["room"], first["coins"]) == ("d-1", room, 380)
        assert first["closes_at"] - first["opens_at"] == CLAIM_MS
        assert (retry["t"], retry["chest"], retry["coins"]) == ("dropped", first["chest"], 380)
        refused(other, "idempotency_conflict", "d-1")
        assert (await api.wallet(dropper))["coins"] == 380

        shown, _ = await extras.recv_until(lambda f: f["t"] == "chest")
        assert shown == {
            "t": "chest",
            "room": room,
            "chest": first["chest"],
            "from": dropper.user,
            "from_name": "t-viewer",
            "coins": 120,
            "opens_at": first["opens_at"],
            "closes_at": first["closes_at"],
        }
        # Later traffic: no second chest for the retry, and none at all for a plain member.
        gifter_ws = await member(stack, chest_server, gifter, room)
        ack = await gifter_ws.gift(room, "rose", "g-1")
        assert ack["t"] == "ack", ack
        for client in (extras, plain):
            _, before = await client.recv_until(
                lambda f: f["t"] == "gift" and f["event"] == ack["event"]
            )
            assert not [f for f in before if f["t"] == "chest"], before


async def test_a_retried_drop_is_answered_as_the_first_time_with_its_opening_and_closing(
    chest_server: ServerProcess, chest_api: Api
) -> None:
    api = chest_api
    host = await api.user(role="host")
    dropper = await api.user(coins=100)
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        dropper_ws = await member(stack, chest_server, dropper, room)
        first = await drop(dropper_ws, room, "d-1", 10)
        assert first["t"] == "dropped" and {"opens_at", "closes_at"} <= set(first), first
        # A client whose answer was lost retries, from another connection too.
        again = await member(stack, chest_server, dropper, room)

        retries = [await drop(dropper_ws, room, "d-1", 10), await drop(again, room, "d-1", 10)]

        assert retries == [first, first]
    assert (await api.wallet(dropper))["coins"] == 90


# -- claims ------------------------------------------------------------------------------------


async def test_claims_are_refused_too_early_for_the_dropper_for_latecomers_twice_and_too_late(
    chest_server: ServerProcess, chest_api: Api
) -> None:
    api = chest_api
    host = await api.user(role="host")
    dropper = await api.user(coins=100)
    claimant = await api.user()
    latecomer = await api.user()
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        claimant_ws = await member(stack, chest_server, claimant, room, extras=True)
        dropper_ws = await member(stack, chest_server, dropper, room)
        dropped = await drop(dropper_ws, room, "d-1", 60)
        chest = dropped["chest"]

        refused(await claim(claimant_ws, room, chest, "early"), "chest_not_open", "early")
        refused(await claim(dropper_ws, room, chest, "own"), "forbidden", "own")

        claimed = await claim_once_open(claimant_ws, room, chest)
        assert claimed["t"] == "claimed", claimed
        assert (claimed["room"], claimed["chest"], claimed["order"]) == (room, chest, 1)
        refused(await claim(claimant_ws, room, chest, "again"), "already_claimed", "again")
        refused(await claim(dropper_ws, room, chest, "own-2"), "forbidden", "own-2")
        # Joined after the opening: not present when it opened.
        latecomer_ws = await member(stack, chest_server, latecomer, room)
        refused(await claim(latecomer_ws, room, chest, "late"), "not_present", "late")

        result, _ = await claimant_ws.recv_until(chest_result(chest), timeout=SETTLE_S)
        assert result == {
            "t": "chest_result",
            "room": room,
            "chest": chest,
            "from": dropper.user,
            "coins": 60,
            "claimants": 1,
            "share": 60,
            "remainder": 0,
            "returned": 0,
            "shares": [{"user": claimant.user, "name": "t-viewer", "coins": 60}],
        }
        refused(await claim(claimant_ws, room, chest, "closed"), "chest_closed", "closed")
        refused(await claim(latecomer_ws, room, chest, "closed-2"), "chest_closed", "closed-2")
        await coins_become(api, {"claimant": (claimant, 60), "dropper": (dropper, 40)})
        assert (await api.wallet(latecomer))["coins"] == 0


# -- the split ---------------------------------------------------------------------------------

CLAIMANTS = 30
DOUBLE_CLAIMANTS = 5
CHEST_COINS = 100


async def test_thirty_concurrent_claimants_share_the_chest_exactly_by_claim_order_once_each(
    fresh_valkey: EmbeddedValkey,
) -> None:
    env = {
        **CHEST_ENV,
        "GIFTSTREAM_CHEST_COUNTDOWN_MS": "1000",
        "GIFTSTREAM_CHEST_CLAIM_MS": "4000",
    }
    async with serving(ServerProcess(fresh_valkey.url, env=env)) as (server, api):
        host = await api.user(role="host")
        dropper = await api.user(coins=1000)
        users = await asyncio.gather(*(api.user() for _ in range(CLAIMANTS)))
        room = await api.open_room(host)
        async with contextlib.AsyncExitStack() as stack:
            watcher = await member(stack, server, await api.user(), room, extras=True)
            claimants = await asyncio.gather(*(member(stack, server, u, room) for u in users))
            # Some claimants claim from a second connection too, at the same moment.
            doubles = await asyncio.gather(
                *(member(stack, server, u, room) for u in users[:DOUBLE_CLAIMANTS])
            )
            dropper_ws = await member(stack, server, dropper, room)
            dropped = await drop(dropper_ws, room, "big", CHEST_COINS)
            chest = dropped["chest"]

            answers = await asyncio.gather(
                *(claim_once_open(c, room, chest) for c in [*claimants, *doubles])
            )

            firsts, seconds = answers[:CLAIMANTS], answers[CLAIMANTS:]
            orders: list[int] = []
            for i, user in enumerate(users):
                mine = [firsts[i], *([seconds[i]] if i < DOUBLE_CLAIMANTS else [])]
                won = [a for a in mine if a["t"] == "claimed"]
                assert len(won) == 1, (user.user, mine)
                assert [a.get("code") for a in mine if a is not won[0]] == ["already_claimed"] * (
                    len(mine) - 1
                ), mine
                orders.append(won[0]["order"])
            assert sorted(orders) == list(range(1, CLAIMANTS + 1))
            twice = await asyncio.gather(*(claim(c, room, chest, "twice") for c in claimants))
            assert [a.get("code") for a in twice] == ["already_claimed"] * CLAIMANTS, twice

            result, _ = await watcher.recv_until(chest_result(chest), timeout=SETTLE_S)

        # floor(100 / 30) = 3 each; the remainder, 10, one coin each to the 10 earliest.
        share, remainder = divmod(CHEST_COINS, CLAIMANTS)
        assert (share, remainder) == (3, 10)
        by_order = sorted(zip(orders, users, strict=True), key=lambda pair: pair[0])
        expected = {user.user: share + (1 if order <= remainder else 0) for order, user in by_order}
        assert sum(expected.values()) == CHEST_COINS
        assert result == {
            "t": "chest_result",
            "room": room,
            "chest": chest,
            "from": dropper.user,
            "coins": CHEST_COINS,
            "claimants": CLAIMANTS,
            "share": share,
            "remainder": remainder,
            "returned": 0,
            "shares": [
                {"user": user.user, "name": "t-viewer", "coins": expected[user.user]}
                for _, user in by_order[:20]
            ],
        }
        wallets: dict[str, tuple[User, int]] = {u.user: (u, expected[u.user]) for u in users}
        wallets["dropper"] = (dropper, 1000 - CHEST_COINS)
        await coins_become(api, wallets)
    assert_audit_clean(*await audit(fresh_valkey.url))


async def test_a_chest_with_fewer_coins_than_claimants_pays_one_each_to_the_earliest(
    chest_server: ServerProcess, chest_api: Api
) -> None:
    api = chest_api
    host = await api.user(role="host")
    dropper = await api.user(coins=10)
    users = [await api.user() for _ in range(5)]
    room = await api.open_room(host)
    async with contextlib.AsyncExitStack() as stack:
        watcher = await member(stack, chest_server, await api.user(), room, extras=True)
        claimants = [await member(stack, chest_server, u, room) for u in users]
        dropper_ws = await member(stack, chest_server, dropper, room)
        chest = (await drop(dropper_ws, room, "small", 3))["chest"]

        # One after the other: the claim order is the order of the users.
        orders = [(await claim_once_open(c, room, chest))["order"] for c in claimants]

        assert orders == [1, 2, 3, 4, 5]
        result, _ = await watcher.recv_until(chest_result(chest), timeout=SETTLE_S)
        assert (result["share"], result["remainder"], result["returned"]) == (0, 3, 0)
        assert [(s["user"], s["coins"]) for s in result["shares"]] == [
            (u.user, 1 if i < 3 else 0) for i, u in enumerate(users)
        ]
    expected = {u.user: (u, 1 if i < 3 else 0) for i, u in enumerate(users)}
    expected["dropper"] = (dropper, 7)
    await coins_become(api, expected)


async def test_an_unclaimed_chest_goes_back_to_its_dropper_in_full(
    fresh_valkey: EmbeddedValkey,
) -> None:
    env = {**CHEST_ENV, "GIFTSTREAM_CHEST_COUNTDOWN_MS": "300", "GIFTSTREAM_CHEST_CLAIM_MS": "300"}
    async with serving(ServerProcess(fresh_valkey.url, env=env)) as (server, api):
        host = await api.user(role="host")
        dropper = await api.user(coins=100)
        room = await api.open_room(host)
        async with contextlib.AsyncExitStack() as stack:
            watcher = await member(stack, server, await api.user(), room, extras=True)
            dropper_ws = await member(stack, server, dropper, room)
            dropped = await drop(dropper_ws, room, "lonely", 70)
            assert dropped["coins"] == 30, dropped

            result, _ = await watcher.recv_until(chest_result(dropped["chest"]), timeout=SETTLE_S)

        assert (result["claimants"], result["returned"], result["shares"]) == (0, 70, [])
        assert (result["share"], result["remainder"], result["coins"]) == (0, 0, 70)
        await coins_become(api, {"dropper": (dropper, 100)})
    assert_audit_clean(*await audit(fresh_valkey.url))
