"""The same-run baselines: bare `websockets` servers that do nothing but move frames, measured
through the same load generator as giftstream, on the same event loop (uvloop), without
compression — so our figures can be given as ratios to them.

- `echo`: every message straight back to its sender: one round trip, the floor for one message in
  Python on this machine.
- `broadcast`: every message to every connection on the same path (a room), sender included,
  with `websockets.broadcast` (no await per socket): the floor for fan-out.

Run as `python -m loadtest.baselines echo|broadcast --port P` (the bench starts them itself).
"""

import argparse
import asyncio
import signal
from collections import defaultdict

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

SUBPROTOCOL = "giftstream.v1+msgpack"
MAX_FRAME_BYTES = 65_536


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


ROOMS: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def fan_out(ws: ServerConnection) -> None:
    room = ROOMS[ws.request.path if ws.request else "/"]
    room.add(ws)
    try:
        async for message in ws:
            broadcast(room, message)
    finally:
        room.discard(ws)


async def main(kind: str, port: int) -> None:
    handler = echo if kind == "echo" else fan_out
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_size=MAX_FRAME_BYTES,
        backlog=4096,
    ):
        try:
            await stop
        except asyncio.CancelledError:
            pass


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.baselines", description=__doc__)
    parser.add_argument("kind", choices=["echo", "broadcast"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(main(args.kind, args.port))


if __name__ == "__main__":
    cli()
