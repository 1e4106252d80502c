"""Identity and limits: nobody acts as someone else, and every limit answers clearly."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from giftstream.store.embedded import EmbeddedValkey
from support import TEST_SECRET, Api, Client, ServerProcess, bearer, metric, running


@pytest.fixture
def strict_server(fresh_valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """A server with the default gift burst, a slow refill (so that a test's own pace cannot
    refill the bucket much), and small connection limits, trusting no address."""
    env = {
        "GIFTSTREAM_GIFT_RATE_PER_S": "1",
        "GIFTSTREAM_TRUSTED_IPS": "none",
        "GIFTSTREAM_MAX_CONNECTIONS_PER_USER": "2",
        "GIFTSTREAM_MAX_CONNECTIONS_PER_IP": "6",
        "GIFTSTREAM_MAX_ROOMS_PER_CONNECTION": "2",
        "GIFTSTREAM_ALLOWED_ORIGINS": "https://fans.example",
    }
    with running(ServerProcess(fresh_valkey.url, env=env)) as s:
        yield s


@pytest.fixture
async def strict_api(strict_server: ServerProcess) -> AsyncIterator[Api]:
    async with Api(strict_server.base_url) as client:
        yield client


async def test_a_gift_frame_cannot_name_another_sender(server: ServerProcess, api: Api) -> None:
    host, victim, thief = await api.user(role="host"), await api.user(coins=50), await api.user()
    room = await api.open_room(host)
    ws = await Client.open(server.ws_url)
    try:
        await ws.auth(thief)
        await ws.join(room)
        await ws.send({"t": "gift", "id": "x", "room": room, "gift": "rose", "from": victim.user})
        answer, _ = await ws.recv_until(lambda f: f["t"] in ("ack", "error"))
        assert answer["code"] == "invalid_field"
        assert (await ws.gift(room, "rose", "y"))["code"] == "insufficient_coins"
    finally:
        await ws.close()
    assert (await api.wallet(victim))["coins"] == 50


async def test_only_the_host_receives_its_credits(server: ServerProcess, api: Api) -> None:
    host, fan, other = await api.user(role="host"), await api.user(coins=10), await api.user()
    room = await api.open_room(host)
    clients = [await Client.open(server.ws_url) for _ in range(3)]
    try:
        for client, user in zip(clients, (host, fan, other), strict=True):
            await client.auth(user)
            await client.join(room)
        ack = await clients[1].gift(room, "rose", "g")
        credit, _ = await clients[0].recv_until(lambda f: f["t"] == "credit")
        assert credit["event"] == ack["event"]
        await clients[2].send({"t": "ping", "id": "p"})
        _, seen = await clients[2].recv_until(lambda f: f["t"] == "pong")
        assert [f["t"] for f in seen if f["t"] == "credit"] == []
        assert [f["event"] for f in seen if f["t"] == "gift"] == [ack["event"]]
    finally:
        for client in clients:
            await client.close()


async def test_the_wallet_is_always_the_tokens_own(api: Api) -> None:
    rich, nosy = await api.user(coins=999), await api.user(coins=1)
    r = await api.http.get(f"/v1/wallet?user={rich.user}", headers=bearer(nosy))
    assert (r.json()["user"], r.json()["coins"]) == (nosy.user, 1)


async def test_the_admin_api_needs_an_admin_token(api: Api) -> None:
    viewer = await api.user(coins=5)
    admin = await api.user(role="admin")
    refused = await api.http.get(f"/v1/admin/users/{viewer.user}", headers=bearer(viewer))
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    seen = await api.http.get(f"/v1/admin/users/{viewer.user}", headers=bearer(admin))
    assert seen.status_code == 200, seen.text
    assert (seen.json()["coins"], seen.json()["frozen"]) == (5, False)
    assert [e["kind"] for e in seen.json()["ledger"]] == ["grant"]


async def test_a_frozen_account_can_neither_gift_nor_buy_until_thawed(
    server: ServerProcess, api: Api
) -> None:
    host, fan, admin = (
        await api.user(role="host"),
        await api.user(coins=20),
        await api.user(role="admin"),
    )
    room = await api.open_room(host)
    freeze = await api.http.post(
        f"/v1/admin/users/{fan.user}/freeze",
        json={"frozen": True, "reason": "chargeback fraud"},
        headers=bearer(admin),
    )
    assert freeze.json() == {"user": fan.user, "frozen": True}
    ws = await Client.open(server.ws_url)
    try:
        await ws.auth(fan)
        await ws.join(room)
        refused = await ws.gift(room, "rose", "f-1")
        assert (refused["t"], refused["code"]) == ("error", "forbidden")
        bought = await api.http.post(
            "/v1/recharge",
            json={"package": "coins_70", "region": "US", "receipt": "frozen-buy"},
            headers=bearer(fan),
        )
        assert bought.json()["code"] == "forbidden"
        assert (await api.wallet(fan))["coins"] == 20
        await api.http.post(
            f"/v1/admin/users/{fan.user}/freeze", json={"frozen": False}, headers=bearer(admin)
        )
        assert (await ws.gift(room, "rose", "f-1"))["t"] == "ack"
    finally:
        await ws.close()
    assert (await api.wallet(fan))["coins"] == 19


def test_admin_token_command_mints_a_token_the_server_accepts(
    server: ServerProcess, valkey: EmbeddedValkey
) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "giftstream.cli", "admin-token", "--redis-url", valkey.url],
        env={**os.environ, "GIFTSTREAM_SECRET": TEST_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    r = httpx.get(
        f"{server.base_url}/v1/admin/rooms/none-such", headers={"authorization": f"Bearer {minted}"}
    )
    assert (r.status_code, r.json()["code"]) == (404, "not_found")


async def test_a_burst_of_200_gifts_is_never_rate_limited_but_the_rate_is_shared(
    strict_server: ServerProcess, strict_api: Api, fresh_valkey: EmbeddedValkey
) -> None:
    host, fan = await strict_api.user(role="host"), await strict_api.user(coins=1000)
    room = await strict_api.open_room(host)
    with running(
        ServerProcess(fresh_valkey.url, env={"GIFTSTREAM_GIFT_RATE_PER_S": "1"})
    ) as second:
        a, b = await Client.open(strict_server.ws_url), await Client.open(second.ws_url)
        try:
            for ws in (a, b):
                await ws.auth(fan)
                await ws.join(room)
            for i in range(100):
                await a.send({"t": "gift", "id": f"a{i}", "room": room, "gift": "rose"})
                await b.send({"t": "gift", "id": f"b{i}", "room": room, "gift": "rose"})
            answers = []
            for ws in (a, b):
                for _ in range(100):
                    got, _ = await ws.recv_until(lambda f: f["t"] in ("ack", "error"))
                    answers.append(got)
            assert [x["t"] for x in answers] == ["ack"] * 200
            # The bucket (300) is shared by both workers: far fewer than 150 more get through.
            for i in range(150):
                await a.send({"t": "gift", "id": f"c{i}", "room": room, "gift": "rose"})
            late = [
                (await a.recv_until(lambda f: f["t"] in ("ack", "error")))[0] for _ in range(150)
            ]
        finally:
            await a.close()
            await b.close()
    acked = sum(1 for x in late if x["t"] == "ack")
    limited = [x for x in late if x["t"] == "error"]
    assert limited and all(x["code"] == "rate_limited" for x in limited)
    assert 100 <= acked < 150
    assert (await strict_api.wallet(fan))["coins"] == 1000 - 200 - acked
    assert await metric(strict_api, 'giftstream_limited_total{limit="gift_rate"}') >= len(limited)


async def test_a_third_connection_of_one_user_is_refused(
    strict_server: ServerProcess, strict_api: Api
) -> None:
    fan = await strict_api.user()
    clients = [await Client.open(strict_server.ws_url) for _ in range(3)]
    try:
        await clients[0].auth(fan)
        await clients[1].auth(fan)
        await clients[2].send({"t": "auth", "token": fan.token})
        refused = await clients[2].recv()
        assert (refused["t"], refused["code"]) == ("error", "rate_limited")
        with pytest.raises(ConnectionClosed) as closed:
            await clients[2].recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        for client in clients:
            await client.close()


async def test_connections_beyond_the_per_address_limit_are_closed(
    strict_server: ServerProcess,
) -> None:
    clients = [await Client.open(strict_server.ws_url) for _ in range(6)]
    extra = await Client.open(strict_server.ws_url)
    try:
        with pytest.raises(ConnectionClosed) as closed:
            await extra.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        for client in [*clients, extra]:
            await client.close()


async def test_a_connection_may_join_only_so_many_rooms(
    strict_server: ServerProcess, strict_api: Api
) -> None:
    fan = await strict_api.user()
    rooms = [await strict_api.open_room(await strict_api.user(role="host")) for _ in range(3)]
    ws = await Client.open(strict_server.ws_url)
    try:
        await ws.auth(fan)
        await ws.join(rooms[0])
        await ws.join(rooms[1])
        third = await ws.request({"t": "join", "room": rooms[2]}, "joined")
        assert (third["t"], third["code"]) == ("error", "rate_limited")
        await ws.request({"t": "leave", "room": rooms[0]}, "left")
        assert (await ws.join(rooms[2]))["room"] == rooms[2]
    finally:
        await ws.close()


async def test_a_browser_page_from_another_origin_cannot_open_a_websocket(
    strict_server: ServerProcess,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await Client.open(strict_server.ws_url, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    allowed = await Client.open(strict_server.ws_url, origin="https://fans.example")
    same = await Client.open(strict_server.ws_url, origin=f"http://127.0.0.1:{strict_server.port}")
    for ws in (allowed, same):
        await ws.send({"t": "ping", "id": "p"})
        assert (await ws.recv())["t"] == "pong"
        await ws.close()


async def test_connection_attempts_per_address_are_limited(fresh_valkey: EmbeddedValkey) -> None:
    env = {"GIFTSTREAM_TRUSTED_IPS": "none", "GIFTSTREAM_CONNECTION_ATTEMPTS_PER_IP_PER_S": "3"}
    with running(ServerProcess(fresh_valkey.url, env=env)) as s:
        outcomes = []
        for _ in range(10):
            try:
                ws = await Client.open(s.ws_url)
                outcomes.append("open")
                await ws.close()
            except InvalidStatus as e:
                outcomes.append(str(e.response.status_code))
        api = Api(s.base_url)
        try:
            counted = await metric(
                api, 'giftstream_limited_total{limit="connection_attempts_per_ip"}'
            )
        finally:
            await api.aclose()
    assert "403" in outcomes and outcomes[:3] == ["open"] * 3
    assert counted == outcomes.count("403")
