"""Every kind of bad frame, over real WebSockets against a real server and Valkey: each gets its
error code (or, when it is too large or undecodable, its close code) and changes no balance."""

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from giftstream import tokens
from support import (
    DROP,
    RECV_TIMEOUT_S,
    TEST_SECRET,
    Api,
    Client,
    Frame,
    ServerProcess,
    User,
    bearer,
    changed,
    raw_opened,
)

SUBPROTOCOLS = [pytest.param(False, id="msgpack"), pytest.param(True, id="json")]
VIEWER_COINS = 100


@dataclass
class Scene:
    """A host with a live room, and a viewer with coins."""

    host: User
    viewer: User
    room: str


async def scene(api: Api, coins: int = VIEWER_COINS) -> Scene:
    host = await api.user(role="host")
    viewer = await api.user(coins=coins)
    return Scene(host, viewer, await api.open_room(host))


async def balances(api: Api, s: Scene) -> tuple[int, int]:
    """The viewer's coins and the host's diamonds."""
    viewer = await api.wallet(s.viewer)
    host = await api.wallet(s.host)
    return viewer["coins"], host["diamonds"]


async def send_value(client: Client, value: Any) -> None:
    """Any value, encoded in the client's subprotocol (not only maps)."""
    if client.json_mode:
        await client.send_raw(json.dumps(value))
    else:
        await client.send_raw(msgpack.packb(value, use_bin_type=True))


async def next_error(client: Client) -> Frame:
    frame, _ = await client.recv_until(lambda f: f["t"] == "error")
    return frame


def assert_error(frame: Frame, code: str, rid: str | None) -> None:
    assert frame["t"] == "error", frame
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"], frame
    if rid is None:
        assert "id" not in frame, frame
    else:
        assert frame["id"] == rid, frame


async def assert_open(client: Client, rid: str = "still-open") -> None:
    """A ping answered by its pong: the connection is open and still serving requests."""
    pong = await client.request({"t": "ping", "id": rid}, "pong")
    assert pong["t"] == "pong" and pong["id"] == rid, pong


async def close_code(client: Client) -> int:
    """Wait for the server to close the connection; the close code it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:  # frames queued before the close are not what this waits for
            await asyncio.wait_for(client.ws.recv(), RECV_TIMEOUT_S)
    rcvd = info.value.rcvd
    assert rcvd is not None, "the server closed without a close frame"
    assert client.ws.close_code == rcvd.code
    return rcvd.code


# -- frames that are answered with an error ------------------------------------------------------

BuildFrame = Callable[[str], Any]


def _gift(room: str, /, **changes: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "gift", "id": "bad-1", "room": room, "gift": "rose", "count": 1}
    return changed(frame, **changes)


LONG_ID = "x" * 65

# (frame built for the room, expected code, expected `id` in the error frame)
BAD_FRAMES = [
    pytest.param(lambda room: ["t", "gift", room], "bad_frame", None, id="list-not-map"),
    pytest.param(lambda room: "gift", "bad_frame", None, id="string-not-map"),
    pytest.param(lambda room: 42, "bad_frame", None, id="integer-not-map"),
    pytest.param(lambda room: None, "bad_frame", None, id="null-not-map"),
    pytest.param(lambda room: _gift(room, t=DROP), "bad_frame", "bad-1", id="missing-t"),
    pytest.param(lambda room: _gift(room, t=7), "bad_frame", "bad-1", id="t-not-string"),
    pytest.param(lambda room: {"t": "tip", "id": "u-1"}, "unknown_type", "u-1", id="unknown-t"),
    pytest.param(lambda room: {"t": "", "id": "u-2"}, "unknown_type", "u-2", id="empty-t"),
    pytest.param(
        lambda room: _gift(room, colour="red"), "invalid_field", "bad-1", id="gift-unknown-field"
    ),
    pytest.param(
        lambda room: {"t": "ping", "id": "p-1", "x": 1},
        "invalid_field",
        "p-1",
        id="ping-unknown-field",
    ),
    pytest.param(lambda room: _gift(room, gift=DROP), "invalid_field", "bad-1", id="no-gift"),
    pytest.param(lambda room: _gift(room, room=DROP), "invalid_field", "bad-1", id="no-room"),
    pytest.param(lambda room: _gift(room, id=DROP), "invalid_field", None, id="gift-no-id"),
    pytest.param(lambda room: _gift(room, count="2"), "invalid_field", "bad-1", id="count-str"),
    pytest.param(lambda room: _gift(room, count=1.5), "invalid_field", "bad-1", id="count-float"),
    pytest.param(lambda room: _gift(room, count=2.0), "invalid_field", "bad-1", id="count-2.0"),
    pytest.param(lambda room: _gift(room, count=True), "invalid_field", "bad-1", id="count-bool"),
    pytest.param(lambda room: _gift(room, count=0), "invalid_field", "bad-1", id="count-zero"),
    pytest.param(lambda room: _gift(room, count=-3), "invalid_field", "bad-1", id="count-neg"),
    pytest.param(lambda room: _gift(room, count=None), "invalid_field", "bad-1", id="count-null"),
    pytest.param(
        lambda room: _gift(room, count=10_001), "invalid_field", "bad-1", id="count-too-big"
    ),
    pytest.param(lambda room: _gift(room, id=LONG_ID), "invalid_field", None, id="id-65-chars"),
    pytest.param(lambda room: _gift(room, id=""), "invalid_field", None, id="id-empty"),
    pytest.param(lambda room: _gift(room, id=12), "invalid_field", None, id="id-int"),
    pytest.param(lambda room: _gift(room, room=12345), "invalid_field", "bad-1", id="room-int"),
    pytest.param(lambda room: _gift(room, gift=["rose"]), "invalid_field", "bad-1", id="gift-list"),
    pytest.param(
        lambda room: {"t": "join", "id": "j-1", "room": 5},
        "invalid_field",
        "j-1",
        id="join-room-int",
    ),
    pytest.param(
        lambda room: {"t": "join", "id": "j-2", "room": room, "since": {"epoch": "e"}},
        "invalid_field",
        "j-2",
        id="join-since-no-offset",
    ),
    pytest.param(
        lambda room: {"t": "join", "id": "j-3", "room": room, "since": 3},
        "invalid_field",
        "j-3",
        id="join-since-not-map",
    ),
    pytest.param(
        lambda room: {"t": "leave", "id": "l-1"}, "invalid_field", "l-1", id="leave-no-room"
    ),
    pytest.param(
        lambda room: {"t": "auth", "id": "a-1", "token": 99}, "invalid_field", "a-1", id="token-int"
    ),
]


@pytest.mark.parametrize("json_mode", SUBPROTOCOLS)
@pytest.mark.parametrize(("build", "code", "rid"), BAD_FRAMES)
async def test_bad_frame_gets_its_error_code_keeps_connection_and_changes_nothing(
    server: ServerProcess,
    api: Api,
    json_mode: bool,
    build: BuildFrame,
    code: str,
    rid: str | None,
) -> None:
    s = await scene(api)
    async with raw_opened(server, json_mode=json_mode) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)
        before = await balances(api, s)

        await send_value(viewer_ws, build(s.room))

        assert_error(await next_error(viewer_ws), code, rid)
        await assert_open(viewer_ws)
        assert await balances(api, s) == before == (VIEWER_COINS, 0)
        # Still a member that can gift: the bad frame broke nothing.
        ack = await viewer_ws.gift(s.room, "rose", "good-1")
        assert ack["t"] == "ack" and ack["coins"] == VIEWER_COINS - 1, ack


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({1: "one"}, id="integer-key"),
        pytest.param({"room": b"raw-bytes"}, id="room-as-bin"),
        pytest.param({"count": 2**64 - 1}, id="count-uint64"),
    ],
)
async def test_msgpack_only_value_kinds_are_invalid_field_not_a_close(
    server: ServerProcess, api: Api, changes: dict[Any, Any]
) -> None:
    s = await scene(api)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        frame: dict[Any, Any] = {"t": "gift", "id": "k-1", "room": s.room, "gift": "rose"}
        frame.update(changes)
        await viewer_ws.send_raw(msgpack.packb(frame, use_bin_type=True))

        assert_error(await next_error(viewer_ws), "invalid_field", "k-1")
        await assert_open(viewer_ws)
        assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_many_bad_frames_in_a_row_each_get_an_error_in_order(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)
        sent: list[tuple[Frame, str]] = [
            ({"t": "nope", "id": "r-1"}, "unknown_type"),
            (_gift(s.room, id="r-2", count="3"), "invalid_field"),
            ({"id": "r-3"}, "bad_frame"),
            ({"t": "join", "id": "r-4", "room": "no-such-room"}, "not_found"),
        ]
        for frame, _ in sent:
            await send_value(viewer_ws, frame)

        for frame, code in sent:
            assert_error(await next_error(viewer_ws), code, frame["id"])
        await assert_open(viewer_ws)
        assert await balances(api, s) == (VIEWER_COINS, 0)


# -- authentication --------------------------------------------------------------------------


async def test_second_auth_as_another_user_is_refused_and_keeps_the_first_identity(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    other = await api.user(coins=7)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        answer = await viewer_ws.request({"t": "auth", "id": "a2", "token": other.token}, "welcome")

        assert_error(answer, "unauthenticated", "a2")
        again = await viewer_ws.auth(s.viewer)
        assert again["user"] == s.viewer.user
        ack = await viewer_ws.gift(s.room, "rose", "a3")
        assert ack["t"] == "ack" and ack["coins"] == VIEWER_COINS - 1, ack
    assert (await api.wallet(other))["coins"] == 7


async def test_join_gift_and_leave_before_auth_are_unauthenticated_and_change_nothing(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    async with raw_opened(server) as viewer_ws:
        early: list[Frame] = [
            {"t": "join", "id": "pre-1", "room": s.room},
            {"t": "gift", "id": "pre-2", "room": s.room, "gift": "rose", "count": 5},
            {"t": "leave", "id": "pre-3", "room": s.room},
        ]
        for frame in early:
            await viewer_ws.send(frame)
            assert_error(await next_error(viewer_ws), "unauthenticated", frame["id"])
        assert await balances(api, s) == (VIEWER_COINS, 0)

        # The connection is still usable: auth now works, and the early join counted nothing.
        welcome = await viewer_ws.auth(s.viewer)
        assert welcome["coins"] == VIEWER_COINS
        joined = await viewer_ws.join(s.room)
        assert joined["viewers"] == 1
        assert joined["offset"] == 0


def _tampered_signature(token: str) -> str:
    version, body, mac = token.split(".")
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    return f"{version}.{body}.{flipped}"


def _other_user_body(token: str, user: str) -> str:
    """The token's signature on claims naming another user."""
    version, _, mac = token.split(".")
    claims = json.dumps({"u": user, "r": "viewer", "exp": int(time.time()) + 3600}).encode()
    forged = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    return f"{version}.{forged}.{mac}"


ForgeToken = Callable[[Scene, tokens.Keyring], str]

FORGED_TOKENS = [
    pytest.param(lambda s, secret: _tampered_signature(s.viewer.token), id="tampered-signature"),
    pytest.param(
        lambda s, secret: _other_user_body(s.host.token, s.viewer.user), id="swapped-body"
    ),
    pytest.param(lambda s, secret: "garbage", id="garbage"),
    pytest.param(lambda s, secret: "v1.e30.AAAA", id="garbage-v1"),
    pytest.param(lambda s, secret: "v2" + s.viewer.token[2:], id="wrong-version"),
    pytest.param(
        lambda s, secret: tokens.sign(
            tokens.Claims(s.viewer.user, "viewer", int(time.time()) - 60), secret
        ),
        id="expired",
    ),
    pytest.param(
        lambda s, secret: tokens.sign(
            tokens.Claims(s.viewer.user, "viewer", int(time.time()) + 3600),
            tokens.Keyring(tokens.Key(b"not-the-secret"), dev=True),
        ),
        id="wrong-secret",
    ),
    pytest.param(
        lambda s, secret: tokens.sign(
            tokens.Claims("u000000000000", "viewer", int(time.time()) + 3600), secret
        ),
        id="no-such-user",
    ),
]


@pytest.mark.parametrize("forge", FORGED_TOKENS)
async def test_forged_token_is_unauthenticated_and_grants_nothing(
    server: ServerProcess, api: Api, forge: ForgeToken
) -> None:
    secret = tokens.Keyring(tokens.Key(TEST_SECRET.encode()), dev=True)
    s = await scene(api)
    # Sanity: the test secret is the server's, so the forgeries differ by one
    # thing only (a token signed with it right now is accepted).
    genuine = tokens.sign(tokens.Claims(s.viewer.user, "viewer", int(time.time()) + 60), secret)
    async with raw_opened(server) as check_ws:
        assert (await check_ws.auth(User(s.viewer.user, genuine)))["user"] == s.viewer.user

    async with raw_opened(server) as forger_ws:
        frame = {"t": "auth", "id": "f-1", "token": forge(s, secret)}
        answer = await forger_ws.request(frame, "welcome")
        assert_error(answer, "unauthenticated", "f-1")

        # Not authenticated afterwards: joining and gifting are still refused.
        await forger_ws.send({"t": "join", "id": "f-2", "room": s.room})
        assert_error(await next_error(forger_ws), "unauthenticated", "f-2")
        await forger_ws.send({"t": "gift", "id": "f-3", "room": s.room, "gift": "rose"})
        assert_error(await next_error(forger_ws), "unauthenticated", "f-3")
        await assert_open(forger_ws)
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_forged_token_is_refused_by_http_too(server: ServerProcess, api: Api) -> None:
    s = await scene(api)
    forged = User(s.viewer.user, _tampered_signature(s.viewer.token))
    r = await api.http.get("/v1/wallet", headers=bearer(forged))
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated"


# -- gift refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("json_mode", SUBPROTOCOLS)
async def test_unknown_gift_is_refused_and_charges_nothing(
    server: ServerProcess, api: Api, json_mode: bool
) -> None:
    s = await scene(api)
    async with raw_opened(server, json_mode=json_mode) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        answer = await viewer_ws.gift(s.room, "golden_unicorn", "ug-1", count=3)

        assert_error(answer, "unknown_gift", "ug-1")
        await assert_open(viewer_ws)
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_gift_to_a_room_not_joined_is_not_in_room_and_charges_nothing(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    other = await scene(api)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(other.room)

        live_not_joined = await viewer_ws.gift(s.room, "rose", "nr-1")
        no_such_room = await viewer_ws.gift("r-does-not-exist", "rose", "nr-2")

        assert_error(live_not_joined, "not_in_room", "nr-1")
        assert_error(no_such_room, "not_in_room", "nr-2")
        await assert_open(viewer_ws)
    assert await balances(api, s) == (VIEWER_COINS, 0)
    assert (await api.wallet(other.host))["diamonds"] == 0


async def test_gift_after_leaving_is_not_in_room(server: ServerProcess, api: Api) -> None:
    s = await scene(api)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)
        left = await viewer_ws.request({"t": "leave", "id": "lv-1", "room": s.room}, "left")
        assert left == {"t": "left", "id": "lv-1", "room": s.room}

        assert_error(await viewer_ws.gift(s.room, "rose", "lv-2"), "not_in_room", "lv-2")
        again = await viewer_ws.request({"t": "leave", "id": "lv-3", "room": s.room}, "left")
        assert_error(again, "not_in_room", "lv-3")
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_ended_room_notifies_members_and_refuses_gifts_as_room_not_live(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    async with raw_opened(server) as host_ws, raw_opened(server, json_mode=True) as viewer_ws:
        await host_ws.auth(s.host, extras=True)
        await host_ws.join(s.room)
        await viewer_ws.auth(s.viewer, extras=True)
        assert (await viewer_ws.join(s.room))["live"] is True
        ack = await viewer_ws.gift(s.room, "rose", "live-1")
        assert ack["t"] == "ack" and ack["coins"] == VIEWER_COINS - 1

        r = await api.http.post(f"/v1/rooms/{s.room}/end", headers=bearer(s.host))
        assert r.status_code == 200, r.text

        for ws in (viewer_ws, host_ws):
            ended, _ = await ws.recv_until(lambda f: f["t"] == "room")
            assert (ended["room"], ended["live"]) == (s.room, False)
        before = await balances(api, s)
        assert before == (VIEWER_COINS - 1, 1)

        answer = await viewer_ws.gift(s.room, "rose", "ended-1", count=4)

        assert_error(answer, "room_not_live", "ended-1")
        await assert_open(viewer_ws)
        assert await balances(api, s) == before
        # Members stay until they leave.
        left = await viewer_ws.request({"t": "leave", "id": "ended-2", "room": s.room}, "left")
        assert left["t"] == "left", left


async def test_joining_an_ended_room_shows_it_not_live_and_gifts_get_room_not_live(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    r = await api.http.post(f"/v1/rooms/{s.room}/end", headers=bearer(s.host))
    assert r.status_code == 200, r.text
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        assert (await viewer_ws.join(s.room))["live"] is False

        answer = await viewer_ws.gift(s.room, "rose", "late-1")

        assert_error(answer, "room_not_live", "late-1")
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_join_of_a_room_that_does_not_exist_is_not_found(
    server: ServerProcess, api: Api
) -> None:
    viewer = await api.user(coins=10)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(viewer)

        answer = await viewer_ws.request({"t": "join", "id": "nf-1", "room": "r-nowhere"}, "joined")

        assert_error(answer, "not_found", "nf-1")
        await assert_open(viewer_ws)
        # Not a member: a gift there is refused.
        assert_error(await viewer_ws.gift("r-nowhere", "rose", "nf-2"), "not_in_room", "nf-2")
    assert (await api.wallet(viewer))["coins"] == 10


# -- close codes -------------------------------------------------------------------------------


@pytest.mark.parametrize("json_mode", SUBPROTOCOLS)
async def test_frame_larger_than_the_limit_closes_with_1009_and_charges_nothing(
    server: ServerProcess, api: Api, json_mode: bool
) -> None:
    s = await scene(api)
    async with raw_opened(server, json_mode=json_mode) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        await viewer_ws.send(_gift(s.room, id="big-1", note="x" * 100_000))

        assert await close_code(viewer_ws) == 1009
    assert await balances(api, s) == (VIEWER_COINS, 0)


def _padded_ping(size: int, json_mode: bool, rid: str) -> bytes | str:
    """A ping frame with an extra field, encoded to exactly `size` bytes."""
    for pad in range(size, 0, -1):
        frame = {"t": "ping", "id": rid, "pad": "x" * pad}
        data: bytes | str = json.dumps(frame) if json_mode else msgpack.packb(frame)
        if len(data) == size:
            return data
    raise AssertionError(f"no ping frame of {size} bytes")


@pytest.mark.parametrize("json_mode", SUBPROTOCOLS)
async def test_frame_of_exactly_the_limit_is_answered_and_one_byte_more_closes_with_1009(
    server: ServerProcess, json_mode: bool
) -> None:
    limit = 65536  # the default max_frame_bytes
    async with raw_opened(server, json_mode=json_mode) as ws:
        await ws.send_raw(_padded_ping(limit, json_mode, "edge"))
        # Decoded and validated (the pad field is unknown): not closed.
        assert_error(await next_error(ws), "invalid_field", "edge")
        await assert_open(ws)

        await ws.send_raw(_padded_ping(limit + 1, json_mode, "over"))

        assert await close_code(ws) == 1009


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(b"\x81\xa1t\xa4ping\x00", id="trailing-bytes"),
    ],
)
async def test_undecodable_msgpack_closes_with_1007(
    server: ServerProcess, api: Api, data: bytes
) -> None:
    s = await scene(api)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        await viewer_ws.send_raw(data)

        assert await close_code(viewer_ws) == 1007
    assert await balances(api, s) == (VIEWER_COINS, 0)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"t": "gift", "id": ', id="truncated"),
        pytest.param("not json", id="bare-word"),
        pytest.param('{"t": "gift", "count": NaN}', id="nan"),
        pytest.param("", id="empty"),
    ],
)
async def test_invalid_json_text_closes_with_1007(
    server: ServerProcess, api: Api, text: str
) -> None:
    s = await scene(api)
    async with raw_opened(server, json_mode=True) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        await viewer_ws.send_raw(text)

        assert await close_code(viewer_ws) == 1007
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_text_frame_on_msgpack_closes_with_1003(server: ServerProcess, api: Api) -> None:
    s = await scene(api)
    async with raw_opened(server) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        await viewer_ws.send_raw(json.dumps(_gift(s.room)))

        assert await close_code(viewer_ws) == 1003
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_binary_frame_on_json_closes_with_1003(server: ServerProcess, api: Api) -> None:
    s = await scene(api)
    async with raw_opened(server, json_mode=True) as viewer_ws:
        await viewer_ws.auth(s.viewer)
        await viewer_ws.join(s.room)

        await viewer_ws.send_raw(msgpack.packb(_gift(s.room), use_bin_type=True))

        assert await close_code(viewer_ws) == 1003
    assert await balances(api, s) == (VIEWER_COINS, 0)


async def test_closing_one_connection_leaves_others_serving(
    server: ServerProcess, api: Api
) -> None:
    s = await scene(api)
    async with raw_opened(server) as bad_ws, raw_opened(server) as good_ws:
        await good_ws.auth(s.viewer)
        await good_ws.join(s.room)
        await bad_ws.send_raw(b"\xc1")
        assert await close_code(bad_ws) == 1007

        ack = await good_ws.gift(s.room, "rose", "other-1")

        assert ack["t"] == "ack" and ack["coins"] == VIEWER_COINS - 1, ack


# -- both subprotocols answer the same -------------------------------------------------------


async def _conversation(server: ServerProcess, api: Api, json_mode: bool) -> None:
    """auth, join, gift, error — each answer compared field by field (and type by type)."""
    host = await api.user(role="host")
    viewer = await api.user(coins=VIEWER_COINS)
    r = await api.http.post("/v1/rooms", headers=bearer(host))
    assert r.status_code == 200, r.text
    room, epoch = r.json()["room"], r.json()["epoch"]
    async with raw_opened(server, json_mode=json_mode) as viewer_ws:
        auth = {"t": "auth", "id": "c-1", "token": viewer.token}
        welcome = await viewer_ws.request(auth, "welcome")
        _same(
            welcome,
            {
                "t": "welcome",
                "id": "c-1",
                "user": viewer.user,
                "name": "t-viewer",
                "region": "US",
                "role": "viewer",
                "room": None,
                "coins": VIEWER_COINS,
                "diamonds": 0,
            },
        )
        joined = await viewer_ws.request({"t": "join", "id": "c-2", "room": room}, "joined")
        _same(
            joined,
            {
                "t": "joined",
                "id": "c-2",
                "room": room,
                "host": host.user,
                "live": True,
                "epoch": epoch,
                "offset": 0,
                "viewers": 1,
                "session": 1,
                "host_name": "t-host",
            },
        )
        await viewer_ws.send(
            {"t": "gift", "id": "c-3", "room": room, "gift": "finger_heart", "count": 3}
        )
        ack, before_ack = await viewer_ws.recv_until(lambda f: f["t"] in ("ack", "error"))
        _same(ack, {"t": "ack", "id": "c-3", "event": str(ack.get("event")), "coins": 85})
        assert ack["event"]
        # The room's gift frame reaches the sender too, before or after its ack.
        gifts = [f for f in before_ack if f["t"] == "gift"]
        seen = gifts[0] if gifts else (await viewer_ws.recv_until(lambda f: f["t"] == "gift"))[0]
        assert seen["streak"]["id"]
        _same(
            {k: v for k, v in seen.items() if k not in ("ts", "streak")},
            {
                "t": "gift",
                "room": room,
                "event": ack["event"],
                "offset": 1,
                "from": viewer.user,
                "from_name": "t-viewer",
                "to": host.user,
                "gift": "finger_heart",
                "name": "Finger Heart",
                "count": 3,
                "coins": 15,
                "diamonds": 15,
                "badge": {"rank": 1, "supporter": False},
            },
        )
        _same(seen["streak"], {"id": seen["streak"]["id"], "repeat": 3, "end": False})
        # The streak ends on its own after the streak timeout.
        last, _ = await viewer_ws.recv_until(lambda f: f["t"] == "gift" and f["streak"]["end"])
        _same(last["streak"], {"id": seen["streak"]["id"], "repeat": 3, "end": True})
        assert last["event"] == ack["event"]
        error = await viewer_ws.gift(room, "no_such_gift", "c-4")
        assert_error(error, "unknown_gift", "c-4")
        _same(
            error,
            {"t": "error", "id": "c-4", "code": "unknown_gift", "message": error.get("message")},
        )
        pong = await viewer_ws.request({"t": "ping", "id": "c-5"}, "pong")
        _same(pong, {"t": "pong", "id": "c-5", "ts": pong.get("ts")})
        assert isinstance(pong["ts"], int) and pong["ts"] > 0


def _same(frame: Frame, expected: Frame) -> None:
    assert frame == expected
    assert {k: type(v) for k, v in frame.items()} == {k: type(v) for k, v in expected.items()}


@pytest.mark.parametrize("json_mode", SUBPROTOCOLS)
async def test_json_and_msgpack_give_the_same_answers(
    server: ServerProcess, api: Api, json_mode: bool
) -> None:
    await _conversation(server, api, json_mode)
