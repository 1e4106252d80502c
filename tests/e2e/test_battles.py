"""LIVE battles end to end: invite and accept, gifts in each room moving that side's score, the
winner, a draw, a forfeit, an early end, the refusals, exactly-once scoring across a worker
killed mid-gift and a relay that dies mid-count, the end on time without the worker that
started the battle, and a battle between rooms on different cluster slots. Audit clean after."""

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

import giftstream_client
from giftstream.store import keys
from giftstream.store.connection import fcall, read_hash
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.embedded_cluster import EmbeddedCluster
from support import (
    SHARED_ENV,
    Api,
    Client,
    Frame,
    ServerProcess,
    User,
    audit_flags,
    bearer,
    connected,
    first_event,
    running,
    serving,
    store,
)

BATTLE_ENV = {
    **SHARED_ENV,
    "GIFTSTREAM_BATTLE_MIN_DURATION_S": "1",
    "GIFTSTREAM_RELAY_INTERVAL_S": "0.1",
}
# The relay's deadline for what happens in the background (an end on time, a recount).
SETTLE_S = 20.0
POLL_S = 0.05
CRASH_EXIT_CODE = 70
LONG_S = 600  # a battle that only ends when the test ends it


@pytest.fixture(scope="module")
def battle_valkey() -> Iterator[EmbeddedValkey]:
    """A Valkey of this module's own, so that the audit after each test sees only battles."""
    path = Path(tempfile.mkdtemp(prefix="gs-"))
    server = EmbeddedValkey(path / "data")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def battle_server(battle_valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    with running(ServerProcess(battle_valkey.url, env=BATTLE_ENV)) as s:
        yield s


@pytest.fixture
async def api(battle_server: ServerProcess) -> AsyncIterator[Api]:
    client = Api(battle_server.base_url)
    yield client
    await client.aclose()


async def post(api: Api, user: User, path: str, body: dict[str, Any] | None = None) -> Frame:
    r = await api.http.post(path, headers=bearer(user), json=body or {})
    answer: Frame = r.json()
    answer["status"] = r.status_code
    return answer


async def invite(api: Api, host: User, rooms: list[str], duration_s: int) -> Frame:
    answer = await post(api, host, "/v1/battles", {"rooms": rooms, "duration_s": duration_s})
    assert answer["status"] == 200, answer
    return answer


async def state(api: Api, battle: str) -> Frame:
    r = await api.http.get(f"/v1/battles/{battle}")
    assert r.status_code == 200, r.text
    body: Frame = r.json()
    return body


async def until_state(api: Api, battle: str, wanted: str) -> Frame:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    while True:
        found = await state(api, battle)
        if found["state"] == wanted:
            return found
        assert loop.time() < deadline, found
        await asyncio.sleep(POLL_S)


async def member(
    stack: contextlib.AsyncExitStack, server: ServerProcess, user: User, room: str
) -> Client:
    """A connection of `user` joined to `room`, with the extension frames (battles among
    them); closed with the stack."""
    client = await Client.open(server.ws_url)
    stack.push_async_callback(client.close)
    await client.auth(user, extras=True)
    await client.join(room)
    return client


def battle_frame(battle: str, state_: str) -> Callable[[Frame], bool]:
    return lambda f: f["t"] == "battle" and f["battle"] == battle and f["state"] == state_


def scores(frame: Frame) -> dict[str, int]:
    return {side["room"]: side["score"] for side in frame["sides"]}


async def send(client: Client, room: str, gift: str, rid: str, count: int = 1) -> Frame:
    answer = await client.gift(room, gift, rid, count)
    assert answer["t"] == "ack", answer
    return answer


@contextlib.asynccontextmanager
async def live_battle(
    api: Api, server: ServerProcess, duration_s: int
) -> AsyncIterator[tuple[list[User], list[str], list[Client], str]]:
    """Two live hosts in a started battle, and a viewer with 10,000 coins joined to each room:
    (hosts, rooms, viewers, battle id)."""
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await api.user(role="host") for _ in range(2)]
        rooms = [await api.open_room(h) for h in hosts]
        viewers = [
            await member(stack, server, await api.user(coins=10_000), room) for room in rooms
        ]
        invited = await invite(api, hosts[0], [rooms[1]], duration_s)
        battle = invited["battle"]
        assert (invited["state"], scores(invited)) == ("invited", {rooms[0]: 0, rooms[1]: 0})
        accepted = await post(api, hosts[1], f"/v1/battles/{battle}/accept")
        assert accepted["state"] == "started", accepted
        for viewer in viewers:
            await viewer.recv_until(battle_frame(battle, "started"))
        yield hosts, rooms, viewers, battle


async def audit(url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "giftstream.cli", "audit", *audit_flags(url)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    report = out.decode(errors="replace")
    assert proc.returncode == 0 and "audit clean" in report, report


async def test_gifts_in_each_room_score_for_its_side_and_the_higher_side_wins_on_time(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    async with live_battle(api, battle_server, 3) as (hosts, rooms, viewers, battle):
        await send(viewers[0], rooms[0], "rosa", "a-1")  # 10 coins
        await send(viewers[0], rooms[0], "finger_heart", "a-2", count=2)  # 10 coins
        await send(viewers[1], rooms[1], "rose", "b-1", count=7)  # 7 coins
        score, _ = await viewers[1].recv_until(
            lambda f: f["t"] == "battle_score" and scores(f) == {rooms[0]: 20, rooms[1]: 7}
        )
        assert 0 <= score["left_s"] <= 3, score
        ended = [(await v.recv_until(battle_frame(battle, "ended"), SETTLE_S))[0] for v in viewers]

    assert ended[0] == ended[1]
    result = ended[0]
    assert scores(result) == {rooms[0]: 20, rooms[1]: 7}
    assert (result["winner"], result["draw"], result["reason"]) == (rooms[0], False, "time")
    tops = {side["room"]: side["top"] for side in result["sides"]}
    assert [t["coins"] for t in tops[rooms[0]]] == [20]
    assert [t["coins"] for t in tops[rooms[1]]] == [7]
    assert [side["host"] for side in result["sides"]] == [h.user for h in hosts]
    # The gifts went to the hosts as ever: the battle moved no diamonds.
    assert (await api.wallet(hosts[0]))["diamonds"] == 20
    assert (await api.wallet(hosts[1]))["diamonds"] == 7
    assert (await state(api, battle))["state"] == "ended"
    await audit(battle_valkey.url)


async def test_equal_scores_are_a_draw_and_a_host_may_end_the_battle_early(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    async with live_battle(api, battle_server, LONG_S) as (hosts, rooms, viewers, battle):
        await send(viewers[0], rooms[0], "rosa", "a-1")
        await send(viewers[1], rooms[1], "rose", "b-1", count=10)
        await viewers[0].recv_until(
            lambda f: f["t"] == "battle_score" and scores(f) == {rooms[0]: 10, rooms[1]: 10}
        )
        ended = await post(api, hosts[1], f"/v1/battles/{battle}/end")
        seen, _ = await viewers[0].recv_until(battle_frame(battle, "ended"))
        # A gift after the end goes to the host, and scores nothing.
        await send(viewers[0], rooms[0], "rosa", "a-2")

    assert ended["status"] == 200, ended
    assert (ended["state"], ended["draw"], ended["reason"]) == ("ended", True, "early")
    assert "winner" not in ended
    assert scores(ended) == {rooms[0]: 10, rooms[1]: 10}
    assert {k: v for k, v in seen.items()} == {k: v for k, v in ended.items() if k != "status"}
    assert scores(await state(api, battle)) == {rooms[0]: 10, rooms[1]: 10}
    assert (await api.wallet(hosts[0]))["diamonds"] == 20
    again = await post(api, hosts[0], f"/v1/battles/{battle}/end")
    assert again["status"] == 200 and again["reason"] == "early", again
    # Once over, the battle's keys expire (after battle_keep_s, a week by default).
    async with store(battle_valkey.url) as redis:
        for key in (keys.battle(battle), keys.battle_scores(battle), keys.battle_scored(battle)):
            assert 0 < await redis.pttl(key) <= 7 * 24 * 3600 * 1000, key
    await audit(battle_valkey.url)


async def test_a_room_that_ends_its_live_forfeits_even_when_ahead(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    async with live_battle(api, battle_server, LONG_S) as (hosts, rooms, viewers, battle):
        await send(viewers[0], rooms[0], "perfume", "a-1")  # 20 coins
        await send(viewers[1], rooms[1], "rose", "b-1")
        await viewers[1].recv_until(
            lambda f: f["t"] == "battle_score" and scores(f) == {rooms[0]: 20, rooms[1]: 1}
        )
        r = await api.http.post(f"/v1/rooms/{rooms[0]}/end", headers=bearer(hosts[0]))
        assert r.status_code == 200, r.text
        result, _ = await viewers[1].recv_until(battle_frame(battle, "ended"))

    assert (result["reason"], result["forfeit"], result["winner"]) == (
        "forfeit",
        rooms[0],
        rooms[1],
    )
    assert result["draw"] is False
    assert scores(result) == {rooms[0]: 20, rooms[1]: 1}
    # Both rooms are free again: the one still live may battle another.
    other = await api.user(role="host")
    other_room = await api.open_room(other)
    again = await invite(api, hosts[1], [other_room], 60)
    assert again["state"] == "invited"
    await audit(battle_valkey.url)


async def test_three_sides_start_once_every_invited_host_accepted_and_the_highest_wins(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    hosts = [await api.user(role="host") for _ in range(3)]
    rooms = [await api.open_room(h) for h in hosts]
    battle = (await invite(api, hosts[0], rooms[1:], LONG_S))["battle"]
    first = await post(api, hosts[2], f"/v1/battles/{battle}/accept")
    assert (first["state"], first["accepted"]) == ("invited", sorted([rooms[0], rooms[2]]))
    assert (await post(api, hosts[1], f"/v1/battles/{battle}/accept"))["state"] == "started"
    async with contextlib.AsyncExitStack() as stack:
        viewers = [await member(stack, battle_server, await api.user(coins=100), r) for r in rooms]
        for viewer, room, gift in zip(viewers, rooms, ("rose", "perfume", "rosa"), strict=True):
            await send(viewer, room, gift, f"{room}-1")
        await viewers[0].recv_until(
            lambda f: f["t"] == "battle_score" and sum(scores(f).values()) == 31
        )
    ended = await post(api, hosts[2], f"/v1/battles/{battle}/end")
    assert scores(ended) == {rooms[0]: 1, rooms[1]: 20, rooms[2]: 10}
    assert (ended["winner"], ended["draw"]) == (rooms[1], False)
    assert [side["room"] for side in ended["sides"]] == rooms
    await audit(battle_valkey.url)


async def test_gifts_before_the_start_score_nothing_and_leave_nothing_behind(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    hosts = [await api.user(role="host") for _ in range(2)]
    rooms = [await api.open_room(h) for h in hosts]
    async with contextlib.AsyncExitStack() as stack, store(battle_valkey.url) as redis:
        viewer = await member(stack, battle_server, await api.user(coins=1000), rooms[0])
        declined = (await invite(api, hosts[0], [rooms[1]], LONG_S))["battle"]
        await send(viewer, rooms[0], "rosa", "while-invited-1")
        await post(api, hosts[1], f"/v1/battles/{declined}/decline")
        assert await read_hash(redis, keys.room_battle_scores(rooms[0])) == {}

        battle = (await invite(api, hosts[0], [rooms[1]], LONG_S))["battle"]
        await send(viewer, rooms[0], "rosa", "while-invited-2")
        assert (await post(api, hosts[1], f"/v1/battles/{battle}/accept"))["state"] == "started"
        await send(viewer, rooms[0], "rose", "started-1")
        await viewer.recv_until(lambda f: f["t"] == "battle_score" and f["battle"] == battle)
        ended = await post(api, hosts[0], f"/v1/battles/{battle}/end")
        assert await read_hash(redis, keys.room_battle_scores(rooms[0])) == {}
    assert scores(ended) == {rooms[0]: 1, rooms[1]: 0}
    assert (await api.wallet(hosts[0]))["diamonds"] == 21  # the gifts go to the host as ever
    await audit(battle_valkey.url)


async def test_a_host_is_in_one_battle_at_a_time_and_each_refusal_has_its_code(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    hosts = [await api.user(role="host") for _ in range(5)]
    rooms = [await api.open_room(h) for h in hosts]

    def code(answer: Frame) -> tuple[int, str]:
        return int(answer["status"]), str(answer.get("code", answer.get("state")))

    async def act(host: int, battle: str, action: str) -> tuple[int, str]:
        return code(await post(api, hosts[host], f"/v1/battles/{battle}/{action}"))

    async def try_invite(host: int, invited: list[str], **more: Any) -> tuple[int, str]:
        return code(await post(api, hosts[host], "/v1/battles", {"rooms": invited, **more}))

    first = (await invite(api, hosts[0], [rooms[1]], 60))["battle"]
    # The inviter's room is in the battle from the invite: no second invite by it or of it.
    assert await try_invite(0, [rooms[2]]) == (409, "in_battle")
    assert await try_invite(2, [rooms[0]]) == (409, "in_battle")
    # A room invited twice accepts one; the other is then refused.
    second = (await invite(api, hosts[3], [rooms[2]], 60))["battle"]
    third = (await invite(api, hosts[4], [rooms[2]], 60))["battle"]
    assert await act(2, second, "accept") == (200, "started")
    assert await act(2, third, "accept") == (409, "in_battle")
    assert await act(2, second, "accept") == (409, "battle_over")
    assert await try_invite(1, [rooms[2]]) == (409, "in_battle")
    # Only its hosts act on a battle.
    assert await act(4, first, "accept") == (403, "not_in_battle")
    assert await act(2, first, "end") == (403, "not_in_battle")
    assert await act(1, "bnope", "accept") == (404, "not_found")
    viewer = await api.user()
    assert code(await post(api, viewer, f"/v1/battles/{first}/end")) == (403, "forbidden")
    # An invite that has not started cannot be ended early; declined, it frees its rooms.
    assert await act(0, first, "end") == (409, "battle_over")
    declined = await post(api, hosts[4], f"/v1/battles/{third}/decline")
    assert (declined["state"], declined["reason"]) == ("declined", "declined")
    assert await act(2, third, "accept") == (409, "battle_over")
    # Bad invites change nothing.
    assert await try_invite(4, ["r1", "r2", "r3", "r4"]) == (400, "invalid_field")
    assert await try_invite(4, [rooms[4]]) == (400, "invalid_field")
    assert await try_invite(4, [rooms[1]], duration_s=99_999) == (400, "invalid_field")
    assert await try_invite(4, ["rnothere"]) == (404, "not_found")
    gone = await api.user(role="host")
    gone_room = await api.open_room(gone)
    await api.http.post(f"/v1/rooms/{gone_room}/end", headers=bearer(gone))
    assert await try_invite(4, [gone_room]) == (409, "room_not_live")
    assert (await act(1, first, "accept")) == (200, "started")
    for battle in (first, second):
        assert (await act(0 if battle == first else 3, battle, "end")) == (200, "ended")
    assert (await invite(api, hosts[4], [rooms[0]], 60))["state"] == "invited"
    await audit(battle_valkey.url)


async def test_an_invite_not_accepted_in_time_expires_and_frees_the_inviters_room(
    battle_valkey: EmbeddedValkey,
) -> None:
    env = {**BATTLE_ENV, "GIFTSTREAM_BATTLE_INVITE_TTL_S": "1"}
    async with serving(ServerProcess(battle_valkey.url, env=env)) as (server, api):
        hosts = [await api.user(role="host") for _ in range(2)]
        rooms = [await api.open_room(h) for h in hosts]
        async with contextlib.AsyncExitStack() as stack:
            studio = await member(stack, server, hosts[1], rooms[1])
            battle = (await invite(api, hosts[0], [rooms[1]], 60))["battle"]
            expired, _ = await studio.recv_until(battle_frame(battle, "declined"), SETTLE_S)
        assert expired["reason"] == "expired"
        late = await post(api, hosts[1], f"/v1/battles/{battle}/accept")
        assert (late["status"], late["code"]) == (409, "battle_over")
        assert (await invite(api, hosts[0], [rooms[1]], 60))["state"] == "invited"


async def test_a_host_inviting_too_often_is_rate_limited_and_the_refusal_changes_nothing(
    battle_valkey: EmbeddedValkey,
) -> None:
    env = {
        **BATTLE_ENV,
        "GIFTSTREAM_BATTLE_INVITE_BURST": "2",
        "GIFTSTREAM_BATTLE_INVITES_PER_MIN": "1",
    }
    async with serving(ServerProcess(battle_valkey.url, env=env)) as (_, api):
        hosts = [await api.user(role="host") for _ in range(3)]
        rooms = [await api.open_room(h) for h in hosts]
        for _ in range(2):  # the burst: invited and withdrawn, each a frame in room 1
            battle = (await invite(api, hosts[0], [rooms[1]], 60))["battle"]
            withdrawn = await post(api, hosts[0], f"/v1/battles/{battle}/decline")
            assert withdrawn["state"] == "declined", withdrawn
        body = {"rooms": [rooms[1]], "duration_s": 60}
        limited = await post(api, hosts[0], "/v1/battles", body)
        assert (limited["status"], limited["code"]) == (429, "rate_limited"), limited
        assert re.search(r"try again in \d+ s", limited["message"]), limited
        # Refused, the invite left the inviter's room free: another host invites it.
        assert (await invite(api, hosts[2], [rooms[0]], 60))["state"] == "invited"
        metrics = (await api.http.get("/metrics")).text
        assert 'giftstream_limited_total{limit="battle_invite"} 1.0' in metrics
    await audit(battle_valkey.url)


async def test_battle_requests_over_the_websocket_are_answered_with_the_battles_state(
    api: Api, battle_server: ServerProcess
) -> None:
    hosts = [await api.user(role="host") for _ in range(2)]
    rooms = [await api.open_room(h) for h in hosts]
    async with contextlib.AsyncExitStack() as stack:
        studios = [
            await member(stack, battle_server, h, r) for h, r in zip(hosts, rooms, strict=True)
        ]
        invited = await studios[0].request(
            {"t": "battle_invite", "id": "i-1", "rooms": [rooms[1]], "duration_s": 60},
            "battle_state",
        )
        assert (invited["t"], invited["id"], invited["state"]) == ("battle_state", "i-1", "invited")
        battle = invited["battle"]
        # The invited host's studio sees the invite come.
        seen, _ = await studios[1].recv_until(battle_frame(battle, "invited"))
        assert seen["sides"][0] == {"room": rooms[0], "host": hosts[0].user, "score": 0}
        accepted = await studios[1].request(
            {"t": "battle_accept", "id": "a-1", "battle": battle}, "battle_state"
        )
        assert (accepted["state"], accepted["left_s"]) == ("started", 60)
        # A member joining now learns the battle from `joined`.
        late = await member(stack, battle_server, await api.user(), rooms[1])
        assert (await late.join(rooms[1]))["battle"] == battle
        refused = await studios[1].request(
            {"t": "battle_accept", "id": "a-2", "battle": battle}, "battle_state"
        )
        assert (refused["t"], refused["code"], refused["id"]) == ("error", "battle_over", "a-2")
        bad = await studios[1].request({"t": "battle_invite", "id": "i-2", "rooms": []}, "x")
        assert (bad["t"], bad["code"]) == ("error", "invalid_field")
        ended = await studios[0].request(
            {"t": "battle_end", "id": "e-1", "battle": battle}, "battle_state"
        )
        assert (ended["state"], ended["draw"], ended["id"]) == ("ended", True, "e-1")


async def test_the_python_client_invites_accepts_and_sees_the_battle_as_events(
    api: Api, battle_server: ServerProcess
) -> None:
    hosts = [await api.user(role="host") for _ in range(2)]
    rooms = [await api.open_room(h) for h in hosts]
    gifter = await api.user(coins=1000)
    Battle = giftstream_client.BattleEvent

    def battle_event(state_: str) -> Callable[[giftstream_client.Event], bool]:
        return lambda e: isinstance(e, Battle) and e.state == state_

    async with (
        connected(battle_server, hosts[0]) as studio_a,
        connected(battle_server, hosts[1]) as studio_b,
        connected(battle_server, gifter) as viewer,
    ):
        await studio_a.join(rooms[0])
        await studio_b.join(rooms[1])
        await viewer.join(rooms[1])
        invited = await studio_a.invite([rooms[1]], duration_s=60)
        assert (invited.state, [s.room for s in invited.sides]) == ("invited", rooms)
        seen, _ = await first_event(studio_b, battle_event("invited"))
        assert isinstance(seen, Battle) and seen.battle == invited.battle
        started = await studio_b.accept(invited.battle)
        assert (started.state, started.left_s) == ("started", 60)
        await viewer.send_gift(rooms[1], "rosa", count=3)
        score, _ = await first_event(
            studio_a, lambda e: isinstance(e, Battle) and e.state == "score"
        )
        assert isinstance(score, Battle) and score.score_of(rooms[1]) == 30
        ended = await studio_a.end_battle(invited.battle)
        assert (ended.state, ended.winner, ended.reason) == ("ended", rooms[1], "early")
        assert ended.sides[1].top[0]["coins"] == 30
        heard, _ = await first_event(viewer, battle_event("ended"))
        assert heard == ended
        with pytest.raises(giftstream_client.ServerError) as refused:
            await studio_b.accept(invited.battle)
        assert refused.value.code == "battle_over"


async def test_a_worker_killed_after_the_credit_leaves_the_score_to_the_relay_counted_once(
    battle_valkey: EmbeddedValkey,
) -> None:
    url = battle_valkey.url
    env = {**BATTLE_ENV, "GIFTSTREAM_RELAY_GRACE_MS": "0"}
    async with serving(ServerProcess(url, env=env)) as (server, api), store(url) as redis:
        async with live_battle(api, server, LONG_S) as (hosts, rooms, viewers, battle):
            await send(viewers[1], rooms[1], "rose", "b-1", count=3)
            crashing = ServerProcess(url, env={**env, "GIFTSTREAM_FAULTS": "crash_after_credit"})
            async with serving(crashing) as (dying, dying_api):
                gifter = await dying_api.user(coins=1000)
                async with contextlib.AsyncExitStack() as stack:
                    client = await member(stack, dying, gifter, rooms[0])
                    await client.send_gift(rooms[0], "perfume", "crash-1")
                    assert await asyncio.to_thread(dying.wait_exit) == CRASH_EXIT_CODE
            # Credited (the host has the diamonds), then counted once by the other's relay.
            assert (await api.wallet(hosts[0]))["diamonds"] == 20
            _seen, _ = await viewers[0].recv_until(
                lambda f: f["t"] == "battle_score" and scores(f)[rooms[0]] == 20, SETTLE_S
            )
            assert await read_hash(redis, keys.room_battle_scores(rooms[0])) == {}
            # The retry is answered as the first time and scores nothing more.
            async with contextlib.AsyncExitStack() as stack:
                again = await member(stack, server, gifter, rooms[0])
                retried = await send(again, rooms[0], "perfume", "crash-1")
            assert retried["coins"] == 980
            ended = await post(api, hosts[0], f"/v1/battles/{battle}/end")
        assert scores(ended) == {rooms[0]: 20, rooms[1]: 3}
        assert ended["winner"] == rooms[0]
    await audit(url)


async def test_a_worker_killed_after_the_debit_leaves_credit_and_score_to_the_relay_once(
    battle_valkey: EmbeddedValkey,
) -> None:
    url = battle_valkey.url
    env = {**BATTLE_ENV, "GIFTSTREAM_RELAY_GRACE_MS": "0"}
    async with serving(ServerProcess(url, env=env)) as (server, api):
        async with live_battle(api, server, LONG_S) as (hosts, rooms, viewers, battle):
            crashing = ServerProcess(url, env={**env, "GIFTSTREAM_FAULTS": "crash_after_debit"})
            async with serving(crashing) as (dying, dying_api):
                gifter = await dying_api.user(coins=1000)
                async with contextlib.AsyncExitStack() as stack:
                    client = await member(stack, dying, gifter, rooms[1])
                    await client.send_gift(rooms[1], "rosa", "crash-1")
                    assert await asyncio.to_thread(dying.wait_exit) == CRASH_EXIT_CODE
            # Not credited yet: the relay credits it, and counts its score with it, once.
            await viewers[0].recv_until(
                lambda f: f["t"] == "battle_score" and scores(f)[rooms[1]] == 10, SETTLE_S
            )
            assert (await api.wallet(hosts[1]))["diamonds"] == 10
            async with contextlib.AsyncExitStack() as stack:
                again = await member(stack, server, gifter, rooms[1])
                retried = await send(again, rooms[1], "rosa", "crash-1")
            assert retried["coins"] == 990
            ended = await post(api, hosts[1], f"/v1/battles/{battle}/end")
        assert scores(ended) == {rooms[0]: 0, rooms[1]: 10}
    await audit(url)


async def test_a_relay_that_dies_after_counting_a_score_does_not_count_it_again(
    api: Api, battle_server: ServerProcess, battle_valkey: EmbeddedValkey
) -> None:
    """What a relay pass does when it dies between counting a score and removing it from the
    room's score outbox: the next pass removes it without counting it twice."""
    url = battle_valkey.url
    async with (
        store(url) as redis,
        live_battle(api, battle_server, LONG_S) as (
            hosts,
            rooms,
            viewers,
            battle,
        ),
    ):
        await send(viewers[0], rooms[0], "rosa", "a-1")
        await viewers[0].recv_until(lambda f: f["t"] == "battle_score")
        # A score left in the outbox as a dying relay would: counted already, not removed.
        event = (await read_hash(redis, keys.battle_scored(battle))).popitem()[0].decode()
        packed = msgpack.packb(
            {
                "battle": battle,
                "event": event,
                "room": rooms[0],
                "from": "someone",
                "from_name": "someone",
                "coins": 10,
                "ts": int(await state_ms(redis)),
            }
        )
        await redis.hset(keys.room_battle_scores(rooms[0]), event, packed)
        again = await fcall(
            redis,
            "giftstream_battle_score",
            [
                keys.battle(battle),
                keys.battle_scores(battle),
                keys.battle_scored(battle),
                keys.battle_top(battle, rooms[0]),
                keys.battle_names(battle),
            ],
            [event, rooms[0], "someone", "someone", 10, int(await state_ms(redis))],
        )
        assert int(again[1]) == 0 and int(again[2]) == 10, again

        async def outbox_empty() -> bool:
            return await read_hash(redis, keys.room_battle_scores(rooms[0])) == {}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while not await outbox_empty():
            assert loop.time() < deadline, "the relay did not clear the score outbox"
            await asyncio.sleep(POLL_S)
        ended = await post(api, hosts[0], f"/v1/battles/{battle}/end")
    assert scores(ended) == {rooms[0]: 10, rooms[1]: 0}
    await audit(url)


async def state_ms(redis: Any) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_battle_ends_on_time_after_the_worker_that_started_it_is_killed(
    battle_valkey: EmbeddedValkey, battle_server: ServerProcess
) -> None:
    url = battle_valkey.url
    starter = ServerProcess(url, env=BATTLE_ENV)
    async with serving(starter) as (server, api):
        async with live_battle(api, server, 2) as (_hosts, rooms, viewers, battle):
            await send(viewers[0], rooms[0], "rose", "a-1")
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            await asyncio.to_thread(server.wait_exit)
    # The other server's relay ends it.
    async with httpx.AsyncClient(base_url=battle_server.base_url) as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while True:
            found = (await http.get(f"/v1/battles/{battle}")).json()
            if found["state"] == "ended":
                break
            assert loop.time() < deadline, found
            await asyncio.sleep(POLL_S)
    assert (found["reason"], found["winner"]) == ("time", rooms[0])
    assert scores(found) == {rooms[0]: 1, rooms[1]: 0}
    await audit(url)


@pytest.fixture(scope="module")
def battle_cluster_server(cluster: EmbeddedCluster) -> Iterator[ServerProcess]:
    with running(ServerProcess(cluster.url, env=BATTLE_ENV)) as s:
        yield s


async def test_a_battle_between_rooms_on_different_cluster_slots_scores_each_side_once(
    battle_cluster_server: ServerProcess,
) -> None:
    server = battle_cluster_server
    api = Api(server.base_url)
    try:
        async with live_battle(api, server, 2) as (_hosts, rooms, viewers, battle):
            # Random ids: the rooms' and the battle's slots are apart but for a 1 in 5,000 chance.
            slots = {keys.key_slot(keys.room(r)) for r in rooms}
            slots.add(keys.key_slot(keys.battle(battle)))
            assert len(slots) == 3, slots
            for n in range(5):
                await send(viewers[0], rooms[0], "rose", f"a-{n}")
            await send(viewers[1], rooms[1], "rosa", "b-1")
            result, _ = await viewers[0].recv_until(battle_frame(battle, "ended"), SETTLE_S)
    finally:
        await api.aclose()
    assert scores(result) == {rooms[0]: 5, rooms[1]: 10}
    assert result["winner"] == rooms[1]
    assert server.redis_url is not None
    await audit(server.redis_url)


async def test_the_demo_rooms_battle_each_other(short_tmp: Path) -> None:
    demo = ServerProcess(
        redis_url=None, data_dir=short_tmp / "data", command="demo", args=["--rooms", "2"]
    )
    async with serving(demo) as (server, api):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while True:
            rooms = sorted(r["room"] for r in (await api.http.get("/v1/rooms")).json())
            battle = None
            if len(rooms) == 2:
                battle = (await battle_of_room(server, api, rooms[0])).get("battle")
            if battle:
                break
            assert loop.time() < deadline, rooms
            await asyncio.sleep(POLL_S)
        # The inviter's room is in the battle from the invite: the accept follows.
        found = await until_state(api, battle, "started")
    assert sorted(side["room"] for side in found["sides"]) == rooms


async def battle_of_room(server: ServerProcess, api: Api, room: str) -> Frame:
    """The `joined` answer of a new viewer of the room (its `battle`, if it is in one)."""
    client = await Client.open(server.ws_url)
    try:
        await client.auth(await api.user())
        return await client.join(room)
    finally:
        await client.close()
