"""Hostile input of issue #15 (items 3 and 5), replayed against a real `giftstream serve --dev`:
every case gets its 4xx with a stable code (or its error frame, or its close code) instead of a
500 or an `internal`, and changes nothing — the balances of a viewer and a host, the number of
accounts, and a clean audit are the same after it as before."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from giftstream.store.audit import run_audit
from giftstream.store.connection import Redis
from support import (
    RECV_TIMEOUT_S,
    Api,
    Client,
    ServerProcess,
    User,
    bearer,
    raw_connected,
    user_accounts,
)

VIEWER_COINS = 5_000
SUPERSCRIPT_TWO = "%C2%B2"  # "²": str.isdigit() says yes, int() says no
DIGITS_5000 = "9" * 5_000  # past the 4,300 digits int() reads
# The default max_body_bytes.
BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Scene:
    viewer: User
    host: User
    admin: User
    room: str
    video: str


@pytest.fixture
async def scene(api: Api) -> Scene:
    viewer = await api.user(coins=VIEWER_COINS)
    host = await api.user(role="host")
    admin = await api.user(role="admin")
    room = await api.open_room(host)
    r = await api.http.post("/v1/videos", headers=bearer(host), json={})
    assert r.status_code == 200, r.text
    return Scene(viewer, host, admin, room, r.json()["video"])


async def _state(api: Api, redis: Redis, scene: Scene) -> tuple[Any, ...]:
    viewer, host = await api.wallet(scene.viewer), await api.wallet(scene.host)
    return viewer, host, await user_accounts(redis)


@contextlib.asynccontextmanager
async def unchanged(api: Api, redis: Redis, scene: Scene) -> AsyncIterator[None]:
    """The block changes no balance, creates no account, and leaves the audit clean."""
    before = await _state(api, redis, scene)
    yield
    assert await _state(api, redis, scene) == before
    report = await run_audit(redis)
    assert report.clean, report.summary()


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body


# --- query strings and paths: strict integers and ids --------------------------------------

Who = Callable[[Scene], User | None]
Path = Callable[[Scene], str]

PATH_CASES = [
    pytest.param(
        lambda s: None, lambda s: f"/v1/packages/quote?coins={SUPERSCRIPT_TWO}", id="quote-²"
    ),
    pytest.param(
        lambda s: None, lambda s: f"/v1/packages/quote?coins={DIGITS_5000}", id="quote-5000"
    ),
    pytest.param(
        lambda s: None, lambda s: "/v1/packages/quote?coins=%EF%BC%91", id="quote-fullwidth"
    ),
    pytest.param(lambda s: None, lambda s: "/v1/packages/quote?coins=-1", id="quote-negative"),
    pytest.param(lambda s: None, lambda s: "/v1/packages/quote?coins=1%0A", id="quote-newline"),
    pytest.param(
        lambda s: None, lambda s: "/v1/packages?region=I%0A", id="packages-region-newline"
    ),
    pytest.param(lambda s: None, lambda s: "/v1/packages?region=%C3%9F", id="packages-region-ß"),
    pytest.param(
        lambda s: s.host, lambda s: f"/v1/earnings?coins={SUPERSCRIPT_TWO}", id="earnings-²"
    ),
    pytest.param(
        lambda s: s.host, lambda s: f"/v1/earnings?coins={DIGITS_5000}", id="earnings-5000"
    ),
    pytest.param(
        lambda s: None, lambda s: f"/v1/rooms/{s.room}/sessions/{SUPERSCRIPT_TWO}", id="session-²"
    ),
    pytest.param(
        lambda s: None, lambda s: f"/v1/rooms/{s.room}/sessions/{DIGITS_5000}", id="session-5000"
    ),
    pytest.param(
        lambda s: None, lambda s: f"/v1/rooms/{s.room}:top/sessions/1", id="session-room-key"
    ),
    pytest.param(
        lambda s: s.admin, lambda s: f"/v1/admin/users/{s.viewer.user}:ledger", id="admin-user-key"
    ),
    pytest.param(
        lambda s: s.admin, lambda s: f"/v1/admin/rooms/{s.room}%7D:events", id="admin-room-brace"
    ),
    pytest.param(lambda s: s.viewer, lambda s: "/v1/recharge/a%0Ab", id="receipt-newline"),
]


@pytest.mark.parametrize(("who", "path"), PATH_CASES)
async def test_a_malformed_number_or_id_in_a_query_or_path_is_invalid_field(
    api: Api, redis: Redis, scene: Scene, who: Who, path: Path
) -> None:
    user = who(scene)
    async with unchanged(api, redis, scene):
        response = await api.http.get(path(scene), headers=bearer(user) if user else None)
        refused(response, 400, "invalid_field")


async def test_a_malformed_video_or_room_in_a_post_path_is_invalid_field(
    api: Api, redis: Redis, scene: Scene
) -> None:
    async with unchanged(api, redis, scene):
        gift = {"id": "hv-1", "gift": "rose"}
        response = await api.http.post(
            f"/v1/videos/{scene.video}:x/gifts", headers=bearer(scene.viewer), json=gift
        )
        refused(response, 400, "invalid_field")
        response = await api.http.post(f"/v1/rooms/{scene.room}%7B/end", headers=bearer(scene.host))
        refused(response, 400, "invalid_field")
        response = await api.http.post(
            f"/v1/admin/users/{scene.viewer.user}:acct/freeze",
            headers=bearer(scene.admin),
            json={"frozen": True},
        )
        refused(response, 400, "invalid_field")


async def test_session_zero_of_a_room_never_opened_is_not_found(api: Api) -> None:
    """Found by the fuzzer (test_http_fuzz.py): it read a session hash that does not exist."""
    response = await api.http.get("/v1/rooms/never-opened/sessions/0")
    refused(response, 404, "not_found")


async def test_well_formed_numbers_in_queries_still_work(api: Api, scene: Scene) -> None:
    quote = await api.http.get("/v1/packages/quote?coins=0100&region=us")
    assert quote.status_code == 200, quote.text
    earnings = await api.http.get("/v1/earnings?coins=1000", headers=bearer(scene.host))
    assert earnings.status_code == 200 and "estimate" in earnings.json(), earnings.text


# --- JSON bodies: nesting, numbers, non-text, unknown keys -----------------------------------

Body = Callable[[Scene], tuple[str, User | None, bytes]]


def _dev_user(raw: bytes) -> Body:
    return lambda s: ("/v1/dev/users", None, raw)


BODY_CASES = [
    # Under the body limit: nesting refused by the decoder (the 100k / 20k are over it,
    # test_a_body_over_the_limit_is_413).
    pytest.param(_dev_user(b"[" * 60_000), id="60k-brackets-no-auth"),
    pytest.param(_dev_user(b'{"a":' * 12_000), id="12k-objects-no-auth"),
    pytest.param(_dev_user(b'{"\\ud800": 1, "name": "x", "region": "US"}'), id="surrogate-key"),
    pytest.param(_dev_user(b'{"name": "\\udfff", "region": "US"}'), id="surrogate-name"),
    pytest.param(_dev_user(b'{"name": "x", "region": "IN\\n"}'), id="region-IN-newline"),
    pytest.param(_dev_user(b'{"name": "x", "region": "in"}'), id="region-lowercase"),
    pytest.param(
        _dev_user(b'{"name": "x", "region": "US", "coins": ' + DIGITS_5000.encode() + b"}"),
        id="coins-5000-digits",
    ),
    pytest.param(
        _dev_user(b'{"name": "x", "region": "US", "coins": ' + b"9" * 4_000 + b"}"),
        id="coins-4000-digits",
    ),
    pytest.param(_dev_user(b'{"name": "x", "region": "US", "coins": 1e400}'), id="coins-1e400"),
    pytest.param(_dev_user(b'{"name": "x", "region": "US", "age": "\xc2\xb2"}'), id="age-²"),
    pytest.param(_dev_user(b'{"name": "x", "region": "US"'), id="truncated"),
    pytest.param(_dev_user(b'{"name": "\xff", "region": "US"}'), id="not-utf8"),
    pytest.param(
        lambda s: ("/v1/recharge", s.viewer, b'{"\\ud800": 1, "region": "US", "receipt": "r"}'),
        id="recharge-surrogate-key",
    ),
    pytest.param(
        lambda s: ("/v1/recharge", s.viewer, b'{"coins": 100, "region": "US\\n", "receipt": "h1"}'),
        id="recharge-region-newline",
    ),
    pytest.param(
        lambda s: (
            "/v1/recharge",
            s.viewer,
            b'{"coins": 1' + b"0" * 30 + b', "region": "US", "receipt": "h2"}',
        ),
        id="recharge-coins-huge",
    ),
    pytest.param(
        lambda s: ("/v1/wallet/limits", s.viewer, b'{"daily_cap": ' + b"9" * 5_000 + b"}"),
        id="limits-cap-5000-digits",
    ),
    pytest.param(
        lambda s: ("/v1/rewards/exchange", s.viewer, b'{"id": "x1", "points": "\xc2\xb2"}'),
        id="exchange-points-²",
    ),
    pytest.param(
        lambda s: ("/v1/payouts", s.host, b'{"id": "p1", "diamonds": ' + b"[" * 50_000 + b"}"),
        id="payout-deep",
    ),
    pytest.param(
        lambda s: (
            f"/v1/videos/{s.video}/gifts",
            s.viewer,
            b'{"id": "g1", "gift": "rose", "count": 1e9}',
        ),
        id="video-gift-float-count",
    ),
    pytest.param(
        lambda s: (
            f"/v1/admin/users/{s.viewer.user}/freeze",
            s.admin,
            b'{"frozen": true, "reason": "\\ud800"}',
        ),
        id="freeze-surrogate-reason",
    ),
    pytest.param(
        lambda s: ("/v1/dev/store/events", None, b'{"type": "settled", "receipt": {"a": ' * 1_000),
        id="store-event-deep",
    ),
]


@pytest.mark.parametrize("case", BODY_CASES)
async def test_a_hostile_json_body_is_invalid_field(
    api: Api, redis: Redis, scene: Scene, case: Body
) -> None:
    path, user, raw = case(scene)
    headers = {"content-type": "application/json", **(bearer(user) if user else {})}
    async with unchanged(api, redis, scene):
        response = await api.http.post(path, content=raw, headers=headers)
        refused(response, 400, "invalid_field")


async def test_an_unknown_key_is_named_escaped_and_a_surrogate_said_why(api: Api) -> None:
    headers = {"content-type": "application/json"}
    raw = '{"name": "x", "region": "US", "r\u00e9gion\u202e": 1}'.encode()
    response = await api.http.post("/v1/dev/users", content=raw, headers=headers)
    refused(response, 400, "invalid_field")
    assert "r\\xe9gion\\u202e" in response.json()["message"]
    raw = b'{"name": "x", "region": "US", "\\ud800": 1}'
    response = await api.http.post("/v1/dev/users", content=raw, headers=headers)
    refused(response, 400, "invalid_field")
    assert "lone surrogate" in response.json()["message"]


# --- body size and media type ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
async def test_a_json_route_refuses_a_body_that_is_not_declared_json_with_415(
    api: Api, redis: Redis, scene: Scene, content_type: str
) -> None:
    body = json.dumps({"id": "mt-1", "points": 1}).encode()
    async with unchanged(api, redis, scene):
        response = await api.http.post(
            "/v1/rewards/exchange",
            content=body,
            headers={"content-type": content_type, **bearer(scene.viewer)},
        )
        refused(response, 415, "unsupported_media_type")
        response = await api.http.post(
            "/v1/dev/users",
            content=json.dumps({"name": "x", "region": "US"}).encode(),
            headers={"content-type": content_type},
        )
        refused(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/problem+json"]
)
async def test_json_with_parameters_or_a_json_suffix_is_accepted(
    api: Api, content_type: str
) -> None:
    response = await api.http.post(
        "/v1/dev/users",
        content=json.dumps({"name": "ct", "region": "US"}).encode(),
        headers={"content-type": content_type},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(json.dumps({"name": "x" * BODY_LIMIT, "region": "US"}).encode(), id="long"),
        pytest.param(b"[" * 100_000, id="100k-brackets"),
        pytest.param(b'{"a":' * 20_000, id="20k-objects"),
    ],
)
async def test_a_body_over_the_limit_is_413(
    api: Api, redis: Redis, scene: Scene, raw: bytes
) -> None:
    async with unchanged(api, redis, scene):
        response = await api.http.post(
            "/v1/dev/users", content=raw, headers={"content-type": "application/json"}
        )
        refused(response, 413, "payload_too_large")


async def test_a_body_at_the_limit_is_read(api: Api) -> None:
    at_limit = {"name": "x", "region": "US", "role": "viewer"}
    padding = BODY_LIMIT - len(json.dumps(at_limit)) - len(', "pad": ""')
    body = json.dumps({**at_limit, "pad": " " * padding}).encode()
    assert len(body) == BODY_LIMIT
    response = await api.http.post(
        "/v1/dev/users", content=body, headers={"content-type": "application/json"}
    )
    refused(response, 400, "invalid_field")  # read (and refused for its unknown field)


async def _exchange(server: ServerProcess, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), RECV_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_huge_announced_body_is_413_before_it_is_sent(
    server: ServerProcess, api: Api, redis: Redis, scene: Scene
) -> None:
    """100 MB announced, 10 bytes sent: the answer comes (and the connection closes) without
    the server waiting for, or reading, the rest."""
    head = (
        "POST /v1/dev/users HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {100 * 1024 * 1024}\r\n\r\n"
    )
    async with unchanged(api, redis, scene):
        answer = await _exchange(server, head.encode() + b'{"name": "')
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"payload_too_large"' in answer


async def test_a_chunked_body_is_cut_off_at_the_limit(
    server: ServerProcess, api: Api, redis: Redis, scene: Scene
) -> None:
    head = (
        b"POST /v1/dev/users HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(BODY_LIMIT // 8192 + 1))
    async with unchanged(api, redis, scene):
        answer = await _exchange(server, head + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"payload_too_large"' in answer


# --- Host (DNS rebinding) -------------------------------------------------------------------


async def test_a_request_for_another_host_is_refused(
    server: ServerProcess, api: Api, redis: Redis, scene: Scene
) -> None:
    """A page on evil.example whose name was rebound to 127.0.0.1 sends Host: evil.example."""
    evil = {"host": "evil.example", "origin": "http://evil.example"}
    async with unchanged(api, redis, scene):
        response = await api.http.get("/v1/wallet", headers={**evil, **bearer(scene.viewer)})
        assert response.status_code == 400, response.text
        assert "coins" not in response.text
        response = await api.http.post(
            "/v1/dev/users",
            headers={**evil, "host": f"evil.example:{server.port}"},
            json={"name": "e", "region": "US", "coins": 1000},
        )
        assert response.status_code == 400, response.text
        response = await api.http.post(
            "/v1/rewards/checkin", headers={**evil, **bearer(scene.viewer)}
        )
        assert response.status_code == 400, response.text


async def test_a_websocket_for_another_host_is_refused_at_the_handshake(
    server: ServerProcess,
) -> None:
    handshake = (
        "GET /v1/ws HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    answer = await _exchange(server, handshake.encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
async def test_loopback_names_are_answered(server: ServerProcess, api: Api, host: str) -> None:
    response = await api.http.get("/healthz", headers={"host": f"{host}:{server.port}"})
    assert response.status_code == 200, response.text


# --- WebSocket frames: ids by pattern, no exception text -----------------------------------


async def test_a_chest_id_naming_another_key_of_the_chest_is_invalid_field(
    server: ServerProcess, api: Api, redis: Redis, scene: Scene
) -> None:
    """`<chest>:claims` and `<chest>:plan` are the chest's own sorted set and hash: as a chest
    id they reached a key of another type (WRONGTYPE, answered `internal`)."""
    claimer = await api.user(coins=0)
    async with (
        raw_connected(server, scene.viewer) as dropper,
        raw_connected(server, claimer) as other,
    ):
        await dropper.join(scene.room)
        await other.join(scene.room)
        dropped = await dropper.request(
            {"t": "drop_chest", "id": "hc-1", "room": scene.room, "coins": 100}, "dropped"
        )
        assert dropped["t"] == "dropped", dropped
        async with unchanged(api, redis, scene):
            for suffix in (":claims", ":plan", "}", ":claims\n"):
                chest = dropped["chest"] + suffix
                answer = await other.request(
                    {"t": "claim", "id": "hc-2", "room": scene.room, "chest": chest}, "claimed"
                )
                assert (answer["t"], answer["code"], answer["id"]) == (
                    "error",
                    "invalid_field",
                    "hc-2",
                )


@pytest.mark.parametrize("json_mode", [False, True], ids=["msgpack", "json"])
async def test_a_room_id_that_is_not_an_id_is_invalid_field(
    server: ServerProcess, api: Api, redis: Redis, scene: Scene, json_mode: bool
) -> None:
    async with (
        unchanged(api, redis, scene),
        raw_connected(server, scene.viewer, json_mode=json_mode) as ws,
    ):
        for frame in (
            {"t": "join", "id": "hr-1", "room": scene.room + ":events"},
            {"t": "gift", "id": "hr-1", "room": scene.room + "}", "gift": "rose"},
            {"t": "drop_chest", "id": "hr-1", "room": "r\u00e9", "coins": 10},
            {"t": "leave", "id": "hr-1", "room": "r 1"},
        ):
            answer = await ws.request(frame, "never")
            assert (answer["t"], answer["code"], answer["id"]) == ("error", "invalid_field", "hr-1")


async def test_json_frames_with_a_surrogate_key_or_a_4000_digit_number_are_answered(
    server: ServerProcess, api: Api, redis: Redis, scene: Scene
) -> None:
    async with (
        unchanged(api, redis, scene),
        raw_connected(server, scene.viewer, json_mode=True) as ws,
    ):
        await ws.join(scene.room)
        # A gift frame without its closing brace, for the hostile part to follow.
        gift = json.dumps({"t": "gift", "id": "hj-1", "room": scene.room, "gift": "rose"})[:-1]
        for raw in (
            gift + ', "\\ud800": 1}',
            gift + ', "count": ' + "9" * 4_000 + "}",
            gift.replace('"rose"', '"\\udfff"') + "}",
        ):
            await ws.send_raw(raw)
            answer, _ = await ws.recv_until(lambda f: f["t"] == "error")
            assert (answer["code"], answer.get("id")) == ("invalid_field", "hj-1"), answer


async def _close_reason(ws: Client) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.ws.recv(), RECV_TIMEOUT_S)
    rcvd = info.value.rcvd
    assert rcvd is not None, "the server closed without a close frame"
    return rcvd.code, rcvd.reason


@pytest.mark.parametrize(
    ("json_mode", "data", "reason"),
    [
        pytest.param(False, b"\xc1", "not a msgpack value", id="msgpack-reserved-byte"),
        pytest.param(False, b"\x92\x01", "not a msgpack value", id="msgpack-truncated"),
        pytest.param(True, '{"t": "ping",', "not a JSON value", id="json-truncated"),
        pytest.param(True, "[" * 10_000 + "]" * 10_000, "not a JSON value", id="json-deep"),
        pytest.param(True, '{"n": ' + "9" * 5_000 + "}", "not a JSON value", id="json-5000-digits"),
    ],
)
async def test_an_undecodable_frame_closes_without_python_exception_text(
    server: ServerProcess, api: Api, scene: Scene, json_mode: bool, data: bytes | str, reason: str
) -> None:
    ws = await Client.open(server.ws_url, json_mode=json_mode)
    try:
        await ws.send_raw(data)
        assert await _close_reason(ws) == (1007, reason)
    finally:
        await ws.close()
