"""A connection's send buffer over a real socket whose peer does not read: the bound, the two
delivery classes, and one write for several frames."""

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from giftstream.realtime.outbound import Outbound, Transport, transport_of
from giftstream.wire.wsframe import server_frame

LIMIT = 64 * 1024
FRAME = server_frame(b"r" * 1000)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Transport, socket.socket]]:
    """A transport writing into a socket whose peer reads only when the test asks."""
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, sock=ours)
    yield transport, peer
    transport.abort()
    peer.close()


async def test_lossy_frames_past_the_bound_are_dropped_and_the_connection_stays(
    pair: tuple[Transport, socket.socket],
) -> None:
    transport, _ = pair
    overflows: list[None] = []
    out = Outbound(transport, LIMIT, on_overflow=lambda: overflows.append(None))
    for _ in range(1000):  # 1 MB at a reader that reads nothing
        out.put(FRAME, lossless=False)
    assert LIMIT - len(FRAME) < out.queued_bytes <= LIMIT
    assert (out.overflowed, overflows) == (False, [])


async def test_a_lossless_frame_that_does_not_fit_marks_a_slow_consumer_once(
    pair: tuple[Transport, socket.socket],
) -> None:
    transport, _ = pair
    overflows: list[None] = []
    out = Outbound(transport, LIMIT, on_overflow=lambda: overflows.append(None))
    for _ in range(1000):
        out.put(FRAME, lossless=False)
    held = out.queued_bytes
    out.put(FRAME, lossless=True)
    out.put(FRAME, lossless=True)
    out.put_all([(FRAME, True)])
    assert (out.overflowed, len(overflows), out.queued_bytes) == (True, 1, held)


async def test_several_frames_go_out_in_order_and_each_is_bounded_alone(
    pair: tuple[Transport, socket.socket],
) -> None:
    transport, peer = pair
    out = Outbound(transport, 3 * len(FRAME) + 10)
    frames = [server_frame(bytes([i]) * 1000) for i in range(5)]
    # The bound holds three: the fourth and fifth (lossy) are dropped, the rest kept in order.
    out.put_all([(f, False) for f in frames])
    received = b""
    loop = asyncio.get_running_loop()
    while len(received) < 3 * len(FRAME):
        received += await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
    assert received == b"".join(frames[:3])
    assert not out.overflowed


async def test_nothing_is_written_once_closed(pair: tuple[Transport, socket.socket]) -> None:
    transport, _ = pair
    out = Outbound(transport, LIMIT)
    for _ in range(200):  # past the socket's own buffers: later writes wait in the transport
        out.put(FRAME, lossless=False)
    before = out.queued_bytes
    assert before > 0
    out.close()
    out.put(FRAME, lossless=True)
    assert (out.queued_bytes, out.overflowed) == (before, False)


def test_only_a_send_bound_to_an_object_with_a_transport_yields_one() -> None:
    async def plain_send(message: object) -> None:
        return None

    assert transport_of(plain_send) is None
