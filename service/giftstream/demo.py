"""`giftstream demo`: simulated live rooms whose bot viewers gift over real WebSockets."""

import asyncio
import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect

from giftstream.settings import Settings
from giftstream.wire.codec import MSGPACK_SUBPROTOCOL

READY_TIMEOUT_S = 60.0
BOT_COINS = 10_000_000
# (gift, weight): mostly combos of cheap gifts, now and then a big moment.
GIFT_MIX = [
    ("rose", 40),
    ("finger_heart", 12),
    ("gg", 10),
    ("doughnut", 6),
    ("confetti", 3),
    ("corgi", 2),
    ("money_gun", 1),
    ("lion", 0.2),
    ("tiktok_universe", 0.1),
]
STREAKABLE = {"rose", "finger_heart", "gg", "doughnut"}


def _http(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            await asyncio.to_thread(_http, base, "GET", "/readyz")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(msgpack.packb(frame))


async def _bot(base: str, ws_url: str, room: str, n: int) -> None:
    user = await asyncio.to_thread(
        _http,
        base,
        "POST",
        "/v1/dev/users",
        {"name": f"bot{n}", "region": random.choice(["US", "GB", "BR", "JP"]), "coins": BOT_COINS},
    )
    async with connect(ws_url, subprotocols=[MSGPACK_SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        await _send(ws, {"t": "auth", "token": user["token"]})
        await _send(ws, {"t": "join", "room": room})
        drain = asyncio.create_task(_drain(ws))
        seq = 0
        try:
            while True:
                await asyncio.sleep(random.uniform(1.0, 6.0))
                gift = random.choices([g for g, _ in GIFT_MIX], [w for _, w in GIFT_MIX])[0]
                taps = random.randint(3, 25) if gift in STREAKABLE else 1
                for _ in range(taps):
                    seq += 1
                    await _send(
                        ws, {"t": "gift", "id": f"{user['user']}-{seq}", "room": room, "gift": gift}
                    )
                    await asyncio.sleep(random.uniform(0.08, 0.3))
        finally:
            drain.cancel()


async def _drain(ws: ClientConnection) -> None:
    async for _ in ws:
        pass


async def _run(settings: Settings, rooms: int, bots: int) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    await _wait_ready(base)
    tasks = []
    for r in range(rooms):
        owner = await asyncio.to_thread(
            _http,
            base,
            "POST",
            "/v1/dev/users",
            {"name": f"host{r + 1}", "region": "US", "role": "host"},
        )
        room = (await asyncio.to_thread(_http, base, "POST", "/v1/rooms", {}, owner["token"]))[
            "room"
        ]
        print(f"demo room {room} is live, hosted by {owner['user']} (host token: {owner['token']})")
        ws_url = f"ws://{host}:{settings.port}/v1/ws"
        tasks += [asyncio.create_task(_bot(base, ws_url, room, r * bots + i)) for i in range(bots)]
    print(f"\n  giftstream demo: open {base}/  (Ctrl+C stops)\n", flush=True)
    await asyncio.gather(*tasks)


def start_bots(rooms: int, bots: int) -> Callable[[Settings], None]:
    """A hook for `serve`: once the settings are final, run the bots in a daemon thread."""

    def start(settings: Settings) -> None:
        thread = threading.Thread(
            target=asyncio.run, args=(_run(settings, rooms, bots),), name="demo-bots", daemon=True
        )
        thread.start()

    return start
