"""A minimal RFC 6455 client on an asyncio Protocol, cheap enough to hold thousands of
connections per process and count hundreds of thousands of frames per second.

A general client (the `websockets` library) parses every frame through a generator and a reader
queue; a load generator that spends more per frame than the server measures itself. Here a
received frame costs a header parse; its payload goes to a callback only where the role needs it
(viewers only count). Client frames are masked (with the C `apply_mask` of `websockets`).
"""

import asyncio
import base64
import hashlib
import os
import random
import struct
from collections.abc import Callable
from typing import cast

from websockets.speedups import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HANDSHAKE_BYTES = 16_384
CLOSE_NORMAL = 1000
# A msgpack `gift` frame holds `t: "gift"`; the live frame closing a streak also `end: true`
# (a byte search, to count gifts without decoding every frame).
GIFT_TYPE = b"\xa1t\xa4gift"
STREAK_END = b"\xa3end\xc3"

OnMessage = Callable[[bytes], None]


class HandshakeError(Exception):
    pass


class ProtocolError(Exception):
    pass


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame."""
    mask = random.randbytes(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65_536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked: bytes = apply_mask(payload, mask)
    return header + mask + masked


class WsClient(asyncio.Protocol):
    """One connection. `frames` counts every data frame (message) received, a `batch` as one;
    `gift_frames` the msgpack `gift` frames in them, a batch's each, that are a gift (not a
    streak's closing frame); `on_message`,
    when set, gets each payload."""

    def __init__(self, host: str, port: int, path: str, subprotocol: str | None) -> None:
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            + (f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else "")
            + "\r\n"
        ).encode()
        self._buffer = bytearray()
        self._open = False
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.on_message: OnMessage | None = None
        self.frames = 0
        self.gift_frames = 0
        self.bytes_in = 0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            if not self._open and not self._read_handshake():
                return
            self._read_frames()
        except (HandshakeError, ProtocolError) as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(1006)

    # -- sending -----------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Send a binary message, unless the connection is no longer open (a gift sent then
        stays unanswered, and is counted so)."""
        if self._open and self.transport is not None:
            self.transport.write(encode_frame(OP_BINARY, payload))

    def close(self, code: int = CLOSE_NORMAL) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._open:
            self.transport.write(encode_frame(OP_CLOSE, struct.pack("!H", code)))
        self._open = False
        self.transport.close()

    # -- parsing -----------------------------------------------------------------------------

    def _read_handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HANDSHAKE_BYTES:
                raise HandshakeError("handshake response too large")
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        if not head[0].startswith("HTTP/1.1 101"):
            raise HandshakeError(f"handshake refused: {head[0]}")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise HandshakeError("wrong Sec-WebSocket-Accept")
        self._open = True
        self.opened.set_result(None)
        return True

    def _read_frames(self) -> None:
        buf = self._buffer
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            b1, b2 = buf[pos], buf[pos + 1]
            if b2 & 0x80:
                raise ProtocolError("the server masked a frame")
            if not b1 & 0x80:
                raise ProtocolError("fragmented messages are not supported")
            length = b2 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[start] << 8) | buf[start + 1]
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buf, start)
                start += 8
            end = start + length
            if end > size:
                break
            opcode = b1 & 0x0F
            if opcode == OP_BINARY or opcode == OP_TEXT:
                self.frames += 1
                # A `batch` is one message of several frames: count the gifts inside.
                self.gift_frames += buf.count(GIFT_TYPE, start, end) - buf.count(
                    STREAK_END, start, end
                )
                self.bytes_in += length
                if self.on_message is not None:
                    self.on_message(bytes(buf[start:end]))
            elif opcode == OP_PING:
                if self.transport is not None and self._open:
                    self.transport.write(encode_frame(OP_PONG, bytes(buf[start:end])))
            elif opcode == OP_CLOSE:
                code = (buf[start] << 8) | buf[start + 1] if length >= 2 else 1005
                self._closed_by_server(code)
                return
            pos = end
        del buf[:pos]

    def _closed_by_server(self, code: int) -> None:
        if not self.closed.done():
            self.closed.set_result(code)
        self.close(CLOSE_NORMAL)

    def _fail(self, error: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(1002)
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str, port: int, path: str, subprotocol: str | None, timeout_s: float
) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WsClient(host, port, path, subprotocol), host, port),
        timeout_s,
    )
    try:
        await asyncio.wait_for(client.opened, timeout_s)
    except BaseException:
        if client.transport is not None:
            client.transport.abort()
        raise
    return client
