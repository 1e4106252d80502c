"""`giftstream demo`: simulated live rooms whose bot viewers gift over real WebSockets, so the
demo page is alive the moment it opens; the rooms battle in pairs. The bots speak protocol v1
with a sender of their own (websockets and `giftstream.wire`): the server's package does not
contain the client (clients/python), and its wheel runs the demo alone."""

import asyncio
import json
import logging
import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from giftstream.errors import ErrorCode
from giftstream.settings import Settings
from giftstream.wire.codec import MSGPACK, Undecodable, WrongFrameKind

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
BOT_COINS = 10_000_000
# A bot whose connection dropped or was refused, or whose room is not live, tries again after
# this.
RETRY_S = 5.0
OPEN_TIMEOUT_S = 10.0
# The demo's rooms battle in pairs: this long, with a pause between battles.
DEMO_BATTLE_S = 60
BATTLE_PAUSE_S = 15.0
BATTLE_POLL_S = 2.0
# (gift, weight): mostly combos of cheap gifts, now and then a big moment.
GIFT_MIX = [
    ("rose", 40),
    ("finger_heart", 12),
    ("gg", 10),
    ("ice_cream_cone", 8),
    ("doughnut", 6),
    ("confetti", 3),
    ("hand_hearts", 3),
    ("corgi", 2),
    ("money_gun", 1),
    ("fireworks", 0.4),
    ("sports_car", 0.25),
    ("lion", 0.15),
    ("tiktok_universe", 0.08),
]
STREAKABLE = {"rose", "finger_heart", "gg", "ice_cream_cone", "doughnut"}
BOT_NAMES = [
    "Mika", "Jonas", "Aiko", "Lucas", "Priya", "Sofia", "Noah", "Lea", "Omar", "Yuki",
    "Chloé", "Mateo", "Hana", "Ravi", "Zoe", "Kenji", "Inès", "Leo", "Amara", "Finn",
]  # fmt: skip


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


class _Dropped(Exception):
    """The bot's connection ended before the answer came."""


class _Refused(Exception):
    """The server answered a bot's request with an `error` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")
        # The outcome is unknown (`unavailable`): the same id, sent again, learns it.
        self.retry = frame.get("retry") is True


# The frames that answer a bot's requests; the room's frames (gifts, credits...) are dropped.
_ANSWERS = frozenset({"welcome", "joined", "ack", "error"})


class _BotLink:
    """One connection of a bot: one request at a time, answered by its `id`; the room's frames
    are read (so the server never sees a slow reader) and dropped."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._answers: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def read(self) -> None:
        try:
            async for message in self._ws:
                text = message if isinstance(message, str) else None
                data = message if isinstance(message, bytes) else None
                frame = MSGPACK.decode(text, data)
                if isinstance(frame, dict) and frame.get("t") in _ANSWERS:
                    self._answers.put_nowait(frame)
        except (ConnectionClosed, Undecodable, WrongFrameKind) as e:
            log.debug("demo bot connection ended: %r", e)
        finally:
            self._answers.put_nowait(None)

    async def ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self._ws.send(MSGPACK.encode(frame))
        while True:
            answer = await self._answers.get()
            if answer is None:
                raise _Dropped
            if answer.get("id") == frame["id"]:
                if answer["t"] == "error":
                    raise _Refused(answer)
                return answer


class DemoBot:
    """A viewer who joins a room and gifts now and then, for as long as the demo runs."""

    def __init__(self, name: str, token: str, room: str) -> None:
        self.name, self.token, self.room = name, token, room
        # A gift sent and not answered yet: sent again, same id, after a reconnect, so that it
        # is charged once.
        self.unanswered: dict[str, Any] | None = None

    async def run(self, ws_url: str) -> None:
        while True:
            try:
                async with connect(
                    ws_url,
                    subprotocols=[Subprotocol(MSGPACK.subprotocol)],
                    compression=None,
                    open_timeout=OPEN_TIMEOUT_S,
                ) as ws:
                    link = _BotLink(ws)
                    reader = asyncio.create_task(link.read())
                    try:
                        await link.ask({"t": "auth", "id": "auth", "token": self.token})
                        await link.ask({"t": "join", "id": "join", "room": self.room})
                        await self._gift_forever(link)
                    finally:
                        reader.cancel()
            except _Refused as e:
                log.info("demo bot %s: %s; trying again", self.name, e)
            except (_Dropped, OSError, TimeoutError, WebSocketException) as e:
                # The server stopping (Ctrl+C) drops every bot: a line each would be noise.
                log.debug("demo bot %s: %r; reconnecting", self.name, e)
            await asyncio.sleep(RETRY_S)

    async def _gift_forever(self, link: _BotLink) -> None:
        if self.unanswered is not None:
            await self._send(link, self.unanswered)
        while True:
            await asyncio.sleep(random.uniform(1.0, 6.0))
            gift = random.choices([g for g, _ in GIFT_MIX], [w for _, w in GIFT_MIX])[0]
            taps = random.randint(3, 25) if gift in STREAKABLE else 1
            try:
                for _ in range(taps):
                    frame = {"t": "gift", "id": str(uuid.uuid4()), "room": self.room, "gift": gift}
                    await self._send(link, frame)
                    await asyncio.sleep(random.uniform(0.08, 0.3))
            except _Refused as e:
                if e.code != ErrorCode.ROOM_NOT_LIVE:
                    raise
                # Someone ended the room from the host studio; it may go live again.
                await asyncio.sleep(RETRY_S)

    async def _send(self, link: _BotLink, gift: dict[str, Any]) -> None:
        self.unanswered = gift
        try:
            await link.ask(gift)
        except _Refused as e:
            if not e.retry:
                self.unanswered = None
            raise
        self.unanswered = None


async def _bot(base: str, ws_url: str, room: str, n: int) -> None:
    name = f"{BOT_NAMES[n % len(BOT_NAMES)]}{random.randint(10, 99)}"
    region = random.choice(["US", "GB", "BR", "JP"])
    user = await asyncio.to_thread(
        _http, base, "POST", "/v1/dev/users", {"name": name, "region": region, "coins": BOT_COINS}
    )
    await DemoBot(name, user["token"], room).run(ws_url)


async def _battles_forever(base: str, first: tuple[str, str], second: tuple[str, str]) -> None:
    """Two demo rooms in LIVE battle after LIVE battle (a host from the studio may take one of
    them into a battle of its own meanwhile: then this pair waits and tries again)."""
    (room, token), (other, other_token) = first, second
    while True:
        try:
            invited = await asyncio.to_thread(
                _http,
                base,
                "POST",
                "/v1/battles",
                {"rooms": [other], "duration_s": DEMO_BATTLE_S},
                token,
            )
            battle = invited["battle"]
            await asyncio.to_thread(
                _http, base, "POST", f"/v1/battles/{battle}/accept", {}, other_token
            )
            state = "started"
            while state != "ended":
                await asyncio.sleep(BATTLE_POLL_S)
                found = await asyncio.to_thread(_http, base, "GET", f"/v1/battles/{battle}")
                state = found["state"]
        except OSError as e:  # urllib's HTTPError too: a refusal (in_battle, not live, ...)
            # Debug only: also what the server's shutdown (Ctrl+C) does to a request.
            log.debug("demo battle %s vs %s: %s; trying again", room, other, e)
        await asyncio.sleep(BATTLE_PAUSE_S)


# The links' frame: no wider than a terminal's usual 80 columns (a host token is longer).
BOX_WIDTH = 78


def links_box(base: str, rooms: list[tuple[str, str]], bots: int) -> str:
    """The demo's links between two rules, so that they stand out from the server's log."""
    lines = [f"giftstream demo: open {base}/", ""]
    for room, token in rooms:
        lines.append(f"room {room} ({bots} bots): watch {base}/?room={room}")
        lines.append(f"  host studio {base}/?host=1&token={token}")
    lines += ["", "Ctrl+C stops everything, Valkey and PostgreSQL included"]
    rule = "═" * BOX_WIDTH
    return "\n".join([rule, *lines, rule])


async def _run(settings: Settings, rooms: int, bots: int) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    ws_url = f"ws://{host}:{settings.port}/v1/ws"
    await _wait_ready(base)
    opened: list[tuple[str, str]] = []
    tasks = []
    for r in range(rooms):
        owner = await asyncio.to_thread(
            _http,
            base,
            "POST",
            "/v1/dev/users",
            {"name": f"{BOT_NAMES[r % len(BOT_NAMES)]} Live", "region": "US", "role": "host"},
        )
        room = (await asyncio.to_thread(_http, base, "POST", "/v1/rooms", {}, owner["token"]))[
            "room"
        ]
        opened.append((room, owner["token"]))
        tasks += [asyncio.create_task(_bot(base, ws_url, room, r * bots + i)) for i in range(bots)]
    tasks += [
        asyncio.create_task(_battles_forever(base, opened[i], opened[i + 1]))
        for i in range(0, len(opened) - 1, 2)
    ]
    print(f"\n{links_box(base, opened, bots)}\n", flush=True)
    await asyncio.gather(*tasks)


def start_bots(rooms: int, bots: int) -> Callable[[Settings], None]:
    """A hook for `serve`: once the settings are final, run the bots in a daemon thread."""

    def start(settings: Settings) -> None:
        thread = threading.Thread(
            target=asyncio.run, args=(_run(settings, rooms, bots),), name="demo-bots", daemon=True
        )
        thread.start()

    return start
