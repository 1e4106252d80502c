"""Helpers of the coin economy's end-to-end tests (tests/e2e/economy/): users of an age,
the HTTP calls of recharges, caps, videos and payouts, and an economy with promotions active now."""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from giftstream.domain.economy import Economy, load_economy
from giftstream.store import keys
from giftstream.store.connection import Redis, read_stream, text

from .api import Api
from .servers import ServerProcess
from .users import User, bearer

RECV_S = 15.0
SETTLE_DEADLINE_S = 20.0
BUNDLED = load_economy()
Json = dict[str, Any]

# --- helpers ----------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


async def make_user(
    api: Api, *, coins: int = 0, region: str = "US", role: str = "viewer", age: int = 30
) -> User:
    r = await api.http.post(
        "/v1/dev/users",
        json={"name": f"t-{role}", "region": region, "role": role, "coins": coins, "age": age},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["age"] == age
    return User(body["user"], body["token"])


async def post(api: Api, path: str, user: User | None, body: Json) -> httpx.Response:
    headers = bearer(user) if user is not None else {}
    return await api.http.post(path, json=body, headers=headers)


async def get(api: Api, path: str, user: User | None = None) -> httpx.Response:
    headers = bearer(user) if user is not None else {}
    return await api.http.get(path, headers=headers)


async def recharge(
    api: Api,
    user: User,
    receipt: str,
    package: str | None = "coins_70",
    *,
    region: str = "US",
    channel: str = "web",
    coins: int | None = None,
) -> httpx.Response:
    body: Json = {"receipt": receipt, "region": region, "channel": channel}
    if package is not None:
        body["package"] = package
    if coins is not None:
        body["coins"] = coins
    return await post(api, "/v1/recharge", user, body)


async def store_event(api: Api, kind: str, receipt: str) -> httpx.Response:
    return await post(api, "/v1/dev/store/events", None, {"type": kind, "receipt": receipt})


async def coins_of(api: Api, user: User) -> int:
    coins: int = (await api.wallet(user))["coins"]
    return coins


async def diamonds_of(api: Api, user: User) -> int:
    diamonds: int = (await api.wallet(user))["diamonds"]
    return diamonds


def error(r: httpx.Response, status: int, code: str) -> str:
    """Assert `r` is the error `code` with HTTP `status`; returns its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    message: str = body["message"]
    assert message
    return message


def ok(r: httpx.Response, status: int = 200) -> Json:
    assert r.status_code == status, r.text
    body: Json = r.json()
    return body


def ok_list(r: httpx.Response) -> list[Json]:
    assert r.status_code == 200, r.text
    body: list[Json] = r.json()
    assert isinstance(body, list), body
    return body


async def ledger(redis: Redis, user: User) -> list[dict[str, str]]:
    entries = await read_stream(redis, keys.user_ledger(user.user))
    return [{text(k): text(v) for k, v in fields.items()} for _, fields in entries]


async def video_of(api: Api, host: User) -> str:
    body = ok(await post(api, "/v1/videos", host, {}))
    assert body["host"] == host.user
    video: str = body["video"]
    return video


async def video_gift(
    api: Api, user: User, video: str, gift: str, request_id: str, count: int = 1
) -> httpx.Response:
    return await post(
        api, f"/v1/videos/{video}/gifts", user, {"id": request_id, "gift": gift, "count": count}
    )


async def set_cap(api: Api, user: User, cap: int | None, **codes: str) -> httpx.Response:
    return await post(api, "/v1/wallet/limits", user, {"daily_cap": cap, **codes})


async def host_with_diamonds(api: Api, diamonds_in_10k: int) -> tuple[User, str]:
    """A host whose room holds `diamonds_in_10k` x 10,000 diamonds, from a whale's video gifts."""
    host = await make_user(api, role="host")
    await api.open_room(host)
    video = await video_of(api, host)
    whale = await make_user(api, coins=10_000 * diamonds_in_10k)
    for n in range(diamonds_in_10k):
        ok(await video_gift(api, whale, video, "interstellar", f"whale-{n}"))
    assert await diamonds_of(api, host) == 10_000 * diamonds_in_10k
    return host, video


# --- a server with promotions active now ------------------------------------------------------

PROMO_CHECKIN_POINTS = 250


def promo_economy_text(now: datetime) -> str:
    """The bundled economy with its promotions replaced by windows around `now`."""
    bundled = (
        Path(__file__).parents[2] / "service" / "giftstream" / "data" / "economy.toml"
    ).read_text()
    head, marker, _ = bundled.partition("# Bonus coins in a time window")
    assert marker, "the bundled economy file changed shape"
    head = head.replace(
        "daily_checkin_points = 50", f"daily_checkin_points = {PROMO_CHECKIN_POINTS}"
    )

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    day = timedelta(days=1)
    windows = [
        ("now-all", 15, now - day, now + day, None, None),
        ("now-ios", 20, now - day, now + day, ["ios"], None),
        ("now-br", 30, now - day, now + day, None, ["BR"]),
        ("ended", 50, now - 2 * day, now - day, None, None),
        ("upcoming", 60, now + day, now + 2 * day, None, None),
    ]
    blocks = []
    for ident, percent, starts, ends, channels, regions in windows:
        lines = [
            "[[promotion]]",
            f'id = "{ident}"',
            f'name = "{ident}"',
            f"bonus_percent = {percent}",
            f'starts = "{stamp(starts)}"',
            f'ends = "{stamp(ends)}"',
        ]
        if channels is not None:
            lines.append("channels = [" + ", ".join(f'"{c}"' for c in channels) + "]")
        if regions is not None:
            lines.append("regions = [" + ", ".join(f'"{r}"' for r in regions) + "]")
        blocks.append("\n".join(lines))
    return head + "\n\n".join(blocks) + "\n"


@dataclass(frozen=True)
class PromoServer:
    server: ServerProcess
    economy: Economy
    path: Path
