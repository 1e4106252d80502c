"""The HTTP API of a real server process: validation, authentication, room ownership, the gift
catalog, wallets, health, readiness and metrics — and that dev endpoints exist only with --dev."""

from typing import Any

import httpx
import pytest

from giftstream.store.embedded import EmbeddedValkey
from support import DROP, Api, ServerProcess, User, bearer, changed, raw_opened, running

# -- helpers -----------------------------------------------------------------------------------


def assert_error_body(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body


def metric(text: str, sample: str) -> float:
    """The value of one sample (`name` or `name{labels}`) of a Prometheus text page; 0 if absent
    (a labelled counter has no sample before its first increment)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def metrics_page(api: Api) -> str:
    r = await api.http.get("/metrics")
    assert r.status_code == 200, r.text
    return r.text


# -- POST /v1/dev/users ------------------------------------------------------------------------

VALID_USER: dict[str, Any] = {"name": "alice", "region": "US", "role": "viewer", "coins": 10}


def _user_body(**changes: Any) -> dict[str, Any]:
    return changed(VALID_USER, **changes)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_user_body(name=DROP), id="missing-name"),
        pytest.param(_user_body(name=""), id="empty-name"),
        pytest.param(_user_body(name=42), id="name-int"),
        pytest.param(_user_body(name="n" * 65), id="name-65-chars"),
        pytest.param(_user_body(region=DROP), id="missing-region"),
        pytest.param(_user_body(region="usa"), id="region-usa"),
        pytest.param(_user_body(region="us"), id="region-lowercase"),
        pytest.param(_user_body(region="U"), id="region-one-letter"),
        pytest.param(_user_body(region=1), id="region-int"),
        pytest.param(_user_body(role="owner"), id="role-unknown"),
        pytest.param(_user_body(role=None), id="role-null"),
        pytest.param(_user_body(coins=-1), id="coins-negative"),
        pytest.param(_user_body(coins="10"), id="coins-string"),
        pytest.param(_user_body(coins=1.5), id="coins-float"),
        pytest.param(_user_body(coins=True), id="coins-bool"),
        pytest.param(_user_body(coins=100_000_001), id="coins-above-dev-max"),
        pytest.param(_user_body(email="a@example.com"), id="unknown-field"),
        pytest.param([VALID_USER], id="list-body"),
        pytest.param("alice", id="string-body"),
    ],
)
async def test_dev_user_with_invalid_body_is_400_invalid_field(api: Api, body: Any) -> None:
    r = await api.http.post("/v1/dev/users", json=body)

    assert_error_body(r, 400, "invalid_field")


async def test_dev_user_with_body_that_is_not_json_is_400_invalid_field(api: Api) -> None:
    r = await api.http.post(
        "/v1/dev/users", content=b"{name: alice", headers={"content-type": "application/json"}
    )

    assert_error_body(r, 400, "invalid_field")


async def test_dev_user_is_created_with_its_coins_and_a_working_token(api: Api) -> None:
    r = await api.http.post("/v1/dev/users", json=_user_body(coins=1234, region="BR"))

    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["user"], str) and body["user"]
    assert isinstance(body["token"], str) and body["token"]
    wallet = await api.wallet(User(body["user"], body["token"]))
    assert (wallet["user"], wallet["coins"], wallet["diamonds"]) == (body["user"], 1234, 0)
    assert wallet["region"] == "BR"


async def test_dev_user_without_role_and_coins_is_a_viewer_with_no_coins(api: Api) -> None:
    r = await api.http.post("/v1/dev/users", json={"name": "bob", "region": "DE"})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["role"] == "viewer"
    wallet = await api.wallet(User(body["user"], body["token"]))
    assert (wallet["coins"], wallet["diamonds"]) == (0, 0)


async def test_each_dev_user_gets_a_distinct_id(api: Api) -> None:
    first = await api.user()
    second = await api.user()

    assert first.user != second.user
    assert first.token != second.token


# -- rooms -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"authorization": "Bearer"}, id="bearer-without-token"),
        pytest.param({"authorization": "Bearer not-a-token"}, id="garbage-token"),
        pytest.param({"authorization": "Basic dXNlcjpwYXNz"}, id="basic-scheme"),
        pytest.param({"authorization": "Bearer v1.e30.AAAA"}, id="bad-signature"),
    ],
)
async def test_open_room_without_a_valid_token_is_401_unauthenticated(
    api: Api, headers: dict[str, str]
) -> None:
    r = await api.http.post("/v1/rooms", headers=headers)

    assert_error_body(r, 401, "unauthenticated")


async def test_open_room_with_a_tampered_token_is_401_unauthenticated(api: Api) -> None:
    host = await api.user(role="host")
    version, body, mac = host.token.split(".")
    tampered = f"{version}.{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"

    r = await api.http.post("/v1/rooms", headers={"authorization": f"Bearer {tampered}"})

    assert_error_body(r, 401, "unauthenticated")


async def test_open_room_returns_a_live_room_of_the_host(server: ServerProcess, api: Api) -> None:
    host = await api.user(role="host")

    r = await api.http.post("/v1/rooms", headers=bearer(host))

    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["room"], str) and body["room"]
    async with raw_opened(server) as ws:
        await ws.auth(host)
        joined = await ws.join(body["room"])
    assert (joined["host"], joined["live"]) == (host.user, True)
    assert joined["epoch"] == body["epoch"]
    assert (await api.wallet(host))["room"] == body["room"]


async def test_only_the_host_ends_a_room_another_user_gets_403_forbidden(
    server: ServerProcess, api: Api
) -> None:
    host = await api.user(role="host")
    intruder = await api.user(role="host")
    room = await api.open_room(host)

    refused = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(intruder))

    assert_error_body(refused, 403, "forbidden")
    async with raw_opened(server) as ws:
        await ws.auth(intruder)
        assert (await ws.join(room))["live"] is True, "a refused end must leave the room live"

    ended = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(host))

    assert ended.status_code == 200, ended.text
    assert ended.json()["live"] is False
    async with raw_opened(server) as ws:
        await ws.auth(host)
        assert (await ws.join(room))["live"] is False


async def test_end_of_an_unknown_room_is_404_not_found(api: Api) -> None:
    host = await api.user(role="host")

    r = await api.http.post("/v1/rooms/r-no-such-room/end", headers=bearer(host))

    assert_error_body(r, 404, "not_found")


async def test_end_room_without_a_token_is_401_unauthenticated(api: Api) -> None:
    host = await api.user(role="host")
    room = await api.open_room(host)

    r = await api.http.post(f"/v1/rooms/{room}/end")

    assert_error_body(r, 401, "unauthenticated")


# -- catalog and wallet ------------------------------------------------------------------------


async def test_gift_catalog_lists_21_gifts_with_id_name_coins_streakable(api: Api) -> None:
    r = await api.http.get("/v1/gifts")

    assert r.status_code == 200, r.text
    gifts = r.json()
    assert isinstance(gifts, list) and len(gifts) == 21
    for gift in gifts:
        assert {"id", "name", "coins", "streakable"} <= set(gift), gift
        assert isinstance(gift["id"], str) and gift["id"], gift
        assert isinstance(gift["name"], str) and gift["name"], gift
        assert type(gift["coins"]) is int and gift["coins"] >= 1, gift
        assert isinstance(gift["streakable"], bool), gift
    assert len({g["id"] for g in gifts}) == 21, "gift ids must be unique"
    by_id = {g["id"]: g for g in gifts}
    assert (by_id["rose"]["name"], by_id["rose"]["coins"], by_id["rose"]["streakable"]) == (
        "Rose",
        1,
        True,
    )
    assert by_id["finger_heart"]["coins"] == 5


async def test_wallet_of_a_new_user_has_its_coins_and_no_diamonds(api: Api) -> None:
    viewer = await api.user(coins=250, region="JP")

    r = await api.http.get("/v1/wallet", headers=bearer(viewer))

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["user"], body["coins"], body["diamonds"]) == (viewer.user, 250, 0)
    assert body["room"] is None


async def test_wallet_without_a_token_is_401_unauthenticated(api: Api) -> None:
    r = await api.http.get("/v1/wallet")

    assert_error_body(r, 401, "unauthenticated")


# -- health, readiness, metrics ----------------------------------------------------------------


async def test_healthz_answers_200(api: Api) -> None:
    r = await api.http.get("/healthz")

    assert r.status_code == 200, r.text


async def test_readyz_answers_200_with_redis_and_pubsub_checks_true(api: Api) -> None:
    r = await api.http.get("/readyz")

    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"redis": True, "pubsub": True}


async def test_metrics_is_prometheus_text_with_the_connections_gauge(
    server: ServerProcess, api: Api
) -> None:
    viewer = await api.user()
    async with raw_opened(server) as first, raw_opened(server) as second:
        await first.auth(viewer)
        await second.auth(viewer)  # both sessions are running now

        r = await api.http.get("/metrics")

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE giftstream_connections gauge" in r.text
    assert metric(r.text, "giftstream_connections") >= 2


async def test_metrics_count_websocket_errors_by_code(server: ServerProcess, api: Api) -> None:
    sample = 'giftstream_errors_total{code="unknown_type"}'
    before = metric(await metrics_page(api), sample)
    async with raw_opened(server) as ws:
        answer = await ws.request({"t": "no_such_type", "id": "m-1"}, "pong")
        assert answer["code"] == "unknown_type", answer

    after = metric(await metrics_page(api), sample)

    assert after == before + 1


async def test_metrics_count_http_errors_by_code(api: Api) -> None:
    sample = 'giftstream_errors_total{code="forbidden"}'
    host = await api.user(role="host")
    intruder = await api.user(role="host")
    room = await api.open_room(host)
    before = metric(await metrics_page(api), sample)

    r = await api.http.post(f"/v1/rooms/{room}/end", headers=bearer(intruder))
    assert r.status_code == 403

    assert metric(await metrics_page(api), sample) == before + 1


# -- without --dev -----------------------------------------------------------------------------


def test_dev_users_is_404_not_found_when_the_server_runs_without_dev(
    valkey: EmbeddedValkey,
) -> None:
    with running(ServerProcess(valkey.url, dev=False)) as prod:
        r = httpx.post(prod.base_url + "/v1/dev/users", json=VALID_USER, timeout=10.0)
        gifts = httpx.get(prod.base_url + "/v1/gifts", timeout=10.0)

    assert_error_body(r, 404, "not_found")
    assert gifts.status_code == 200 and len(gifts.json()) == 21, "the rest of the API works"
