"""The two ways a test connects over WebSocket: `connected()` gives `giftstream_client.Client`, as
a program uses the service (typed acks, events and errors); `raw_connected()` gives the raw-frame
`Client` of frames.py, for the tests whose subject is the wire itself."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import giftstream_client

from .frames import RECV_TIMEOUT_S, Client
from .servers import ServerProcess
from .users import User


@contextlib.asynccontextmanager
async def raw_opened(
    server: ServerProcess, *, json_mode: bool = False, **options: Any
) -> AsyncIterator[Client]:
    """A raw-frame connection to `server`, not authenticated yet (`options` go to the websockets
    client); closed when the block ends."""
    client = await Client.open(server.ws_url, json_mode=json_mode, **options)
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def raw_connected(
    server: ServerProcess, user: User, *, extras: bool = False, json_mode: bool = False
) -> AsyncIterator[Client]:
    """A raw-frame connection of `user` on `server`, authenticated; closed when the block ends."""
    async with raw_opened(server, json_mode=json_mode) as client:
        await client.auth(user, extras=extras)
        yield client


async def member(
    stack: contextlib.AsyncExitStack,
    server: ServerProcess,
    user: User,
    room: str | None = None,
    *,
    extras: bool = False,
    json_mode: bool = False,
) -> Client:
    """A raw-frame connection authenticated as `user` (and joined to `room`), closed with the
    stack."""
    client = await stack.enter_async_context(
        raw_connected(server, user, extras=extras, json_mode=json_mode)
    )
    if room is not None:
        await client.join(room)
    return client


@contextlib.asynccontextmanager
async def connected(
    server: ServerProcess, user: User, **options: Any
) -> AsyncIterator[giftstream_client.Client]:
    """`giftstream_client.Client` of `user` on `server`, connected (`options` go to the
    client); closed when the block ends."""
    async with giftstream_client.Client(server.ws_url, user.token, **options) as client:
        yield client


async def gift_burst(
    server: ServerProcess, user: User, room: str, connections: int, per_connection: int, tag: str
) -> list[giftstream_client.Ack | giftstream_client.ServerError]:
    """`per_connection` roses in flight at once on each of `connections` connections of `user`
    joined to `room` (ids `<tag>-<connection>-<n>`): every answer, an ack or its refusal."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connected(server, user, receive_events=False))
            for _ in range(connections)
        ]
        for client in clients:
            await client.join(room)

        async def attempt(
            client: giftstream_client.Client, rid: str
        ) -> giftstream_client.Ack | giftstream_client.ServerError:
            try:
                return await client.send_gift(room, "rose", id=rid)
            except giftstream_client.ServerError as refused:
                return refused

        return await asyncio.gather(
            *(
                attempt(client, f"{tag}-{c}-{n}")
                for c, client in enumerate(clients)
                for n in range(per_connection)
            )
        )


async def first_event(
    client: giftstream_client.Client,
    match: Callable[[giftstream_client.Event], bool],
    timeout: float = RECV_TIMEOUT_S,
) -> tuple[giftstream_client.Event, list[giftstream_client.Event]]:
    """The client's first event matching, and every event it yielded before that one."""
    skipped: list[giftstream_client.Event] = []
    events = client.events()
    async with asyncio.timeout(timeout):
        async for event in events:
            if match(event):
                return event, skipped
            skipped.append(event)
    raise AssertionError(f"the client closed before a matching event; before it: {skipped}")
