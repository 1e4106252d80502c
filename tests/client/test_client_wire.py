"""What the client puts on the wire and counts of it, against a scripted WebSocket server that
records every frame the client sends."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from giftstream.wire.codec import MSGPACK, MSGPACK_SUBPROTOCOL
from giftstream_client import Client, CreditEvent, GiftEvent
from support.client_harness import WAIT_S

Frame = dict[str, Any]
ROOM = "r-scripted"


def gift_frame(offset: int) -> Frame:
    return {
        "t": "gift",
        "room": ROOM,
        "event": f"e{offset}",
        "offset": offset,
        "from": "u-fan",
        "to": "u-host",
        "gift": "confetti",
        "count": 1,
        "coins": 100,
    }


def credit_frame(offset: int) -> Frame:
    return {
        "t": "credit",
        "room": ROOM,
        "event": f"e{offset - 1}",
        "offset": offset,
        "from": "u-fan",
        "gift": "confetti",
        "count": 1,
        "diamonds": 100,
        "total": 100,
        "video": "v-clip",
    }


class Scripted:
    """Answers `auth` and `join`; after the `joined`, sends one `batch` of a gift and its
    credit, then one more gift. Keeps every frame the client sent."""

    def __init__(self) -> None:
        self.received: list[Frame] = []

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            frame: Frame = MSGPACK.decode(None, message if isinstance(message, bytes) else None)
            self.received.append(frame)
            if frame["t"] == "auth":
                welcome = {"t": "welcome", "id": frame["id"], "user": "u-host", "coins": 0}
                await ws.send(MSGPACK.encode({**welcome, "diamonds": 0}))
            elif frame["t"] == "join":
                joined = {"t": "joined", "id": frame["id"], "room": ROOM, "host": "u-host"}
                joined |= {"live": True, "epoch": "ep", "offset": 0, "viewers": 1}
                await ws.send(MSGPACK.encode(joined))
                batch = {"t": "batch", "room": ROOM, "frames": [gift_frame(1), credit_frame(2)]}
                await ws.send(MSGPACK.encode(batch))
                await ws.send(MSGPACK.encode(gift_frame(3)))


@contextlib.asynccontextmanager
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted()
    async with serve(
        script.handler,
        "127.0.0.1",
        0,
        subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
        compression=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield script, f"ws://127.0.0.1:{port}/v1/ws"


@pytest.mark.parametrize("receive_events", [True, False])
async def test_only_a_client_that_receives_events_asks_for_the_extension_frames(
    receive_events: bool,
) -> None:
    async with scripted() as (script, url):
        async with Client(url, "v1.any.token", receive_events=receive_events) as client:
            await client.join(ROOM)

    auth = script.received[0]
    assert auth["t"] == "auth"
    assert ("extras" in auth) is receive_events
    assert auth.get("extras", True) is True


async def test_messages_received_counts_every_message_a_batch_as_one() -> None:
    async with scripted() as (_, url), Client(url, "v1.any.token") as client:
        assert client.messages_received == 1  # the welcome
        await client.join(ROOM)
        events = client.events()
        async with asyncio.timeout(WAIT_S):
            got = [await anext(events) for _ in range(3)]

        # welcome, joined, the batch (two events), the last gift.
        assert client.messages_received == 4
    assert [type(e) for e in got] == [GiftEvent, CreditEvent, GiftEvent]
    assert [e.offset for e in got if isinstance(e, GiftEvent | CreditEvent)] == [1, 2, 3]
    credit = got[1]
    assert isinstance(credit, CreditEvent) and credit.video == "v-clip"
