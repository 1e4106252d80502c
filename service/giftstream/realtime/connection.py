"""One WebSocket connection's plumbing, whatever it is asked: its bounded send buffer, its
deadlines (authenticate in time, keep up reading) and how it closes (close codes, slow consumers,
peers that never read). The session (session.py) adds the requests."""

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from giftstream import metrics
from giftstream.errors import ERRORS, GiftstreamError, UnsupportedMediaType
from giftstream.realtime.outbound import Outbound, Transport, fix_send_buffer
from giftstream.settings import Settings
from giftstream.wire.codec import Codec, Undecodable, WrongFrameKind
from giftstream.wire.wsframe import server_frame

log = logging.getLogger(__name__)

CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# How long a slow consumer has to take the close frame before its connection is dropped.
SLOW_CONSUMER_ABORT_S = 10.0
# How often a connection checks that it keeps up (its reader) and can still close (its socket).
WATCH_INTERVAL_S = 1.0


class Watch:
    """One timer per event loop for the checks of all its connections: a timer per connection
    would hold a handle for each and wake the loop once per connection a second (20,000 a
    second at 20,000 connections)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._connections: set[Connection] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: "Connection") -> None:
        self._connections.add(connection)
        if self._timer is None:
            self._timer = self._loop.call_later(WATCH_INTERVAL_S, self._check_all)

    def discard(self, connection: "Connection") -> None:
        self._connections.discard(connection)
        if not self._connections:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            _WATCHES.pop(self._loop, None)

    def _check_all(self) -> None:
        self._timer = self._loop.call_later(WATCH_INTERVAL_S, self._check_all)
        now = time.monotonic()
        for connection in list(self._connections):
            try:
                connection.check(now)
            except Exception:  # one connection's failure must not stop the others' checks
                log.exception("checking a connection failed")


# Each event loop's Watch, while it watches connections.
_WATCHES: dict[asyncio.AbstractEventLoop, Watch] = {}


def _watch_of(loop: asyncio.AbstractEventLoop) -> Watch:
    watch = _WATCHES.get(loop)
    if watch is None:
        watch = _WATCHES[loop] = Watch(loop)
    return watch


class Connection:
    """Reads frames and hands each decoded one to `handle`; `finish` runs before the close."""

    # Slots: a worker holds tens of thousands of connections.
    __slots__ = (
        "_auth_deadline",
        "_close",
        "_closing",
        "_closing_seen",
        "codec",
        "outbound",
        "settings",
        "ws",
    )

    def __init__(
        self, ws: WebSocket, transport: Transport, codec: Codec, settings: Settings
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.settings = settings
        self.outbound = Outbound(
            transport,
            settings.send_queue_bytes,
            on_overflow=self._on_overflow,
            kernel_bytes=fix_send_buffer(transport, settings.socket_send_buffer_bytes),
        )
        self._auth_deadline: asyncio.TimerHandle | None = None
        self._closing_seen: float | None = None
        self._closing: asyncio.Task[None] | None = None
        self._close: tuple[int, str] | None = None

    @property
    def user(self) -> str | None:
        """Who the connection is authenticated as (None: nobody yet)."""
        return None

    async def handle(self, decoded: Any) -> None:
        raise NotImplementedError

    async def finish(self) -> None:
        """What to end before the connection closes."""

    async def run(self) -> None:
        metrics.CONNECTIONS.inc()
        loop = asyncio.get_running_loop()
        self._auth_deadline = loop.call_later(self.settings.auth_timeout_s, self._on_auth_deadline)
        watch = _watch_of(loop)
        watch.add(self)
        try:
            await self._read_forever()
        finally:
            if self._auth_deadline is not None:
                self._auth_deadline.cancel()
            watch.discard(self)
            await self.finish()
            self.outbound.close()
            if self._closing is None:
                await self._send_close()
            # Closed, the transport still waits to send what it holds: not for ever.
            loop.call_later(SLOW_CONSUMER_ABORT_S, self.outbound.abort_if_stuck)
            metrics.CONNECTIONS.dec()

    async def _read_forever(self) -> None:
        while self._close is None and not self.outbound.overflowed:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            metrics.FRAMES_IN.inc()
            try:
                decoded = self.codec.decode(message.get("text"), message.get("bytes"))
            except WrongFrameKind as e:
                self.send_error(UnsupportedMediaType(str(e)), None)
                return
            except Undecodable as e:
                self.close_with(CLOSE_INVALID_PAYLOAD, str(e)[:120])
                return
            await self.handle(decoded)

    def close_with(self, code: int, reason: str) -> None:
        """Close after what is already queued (the read loop stops at its next frame)."""
        metrics.CLOSES.labels(str(code)).inc()
        self._close = (code, reason[:120])
        self.outbound.close()

    def _on_auth_deadline(self) -> None:
        self._auth_deadline = None  # fired: its handle is not kept for the connection's life
        if self.user is not None or self._close is not None:
            return
        metrics.LIMITED.labels("auth_timeout").inc()
        self.close_with(
            CLOSE_POLICY, f"authenticate within {self.settings.auth_timeout_s:g} s of connecting"
        )
        # The read loop waits for a frame: the close wakes it (as a disconnect).
        self._closing = asyncio.create_task(self._send_close())

    def check(self, now: float) -> None:
        """Every WATCH_INTERVAL_S (its loop's Watch): close a reader that stays behind, and
        drop a connection whose transport is closing (uvicorn's keepalive timeout, say) but
        cannot send what it holds to a peer that does not read."""
        if self.outbound.closing:
            if self._closing_seen is None:
                self._closing_seen = now
            elif now - self._closing_seen > SLOW_CONSUMER_ABORT_S:
                self.outbound.abort()
            return
        behind = self.outbound.behind_for(now)
        if self._close is None and behind > self.settings.slow_reader_timeout_s:
            self._close_slow_consumer(f"behind for {behind:.0f} s")

    def _on_overflow(self) -> None:
        self._close_slow_consumer("a lossless frame did not fit")

    def _close_slow_consumer(self, why: str) -> None:
        """Close now (the close frame follows what the socket already holds); a client that
        does not read even that is cut off after a while."""
        metrics.CLOSES.labels("slow_consumer").inc()
        log.warning(
            "closing a slow consumer (user %s, %d bytes queued): %s",
            self.user or "-",
            self.outbound.queued_bytes,
            why,
        )
        self._close = (CLOSE_POLICY, "slow consumer: resume from your last offset")
        self.outbound.close()
        self._closing = asyncio.create_task(self._send_close())
        asyncio.get_running_loop().call_later(SLOW_CONSUMER_ABORT_S, self.outbound.abort)

    async def _send_close(self) -> None:
        if self._close is None or self.ws.client_state is not WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.close(*self._close)

    def send(self, frame: dict[str, Any]) -> None:
        self.outbound.put(server_frame(self.codec.encode(frame)), lossless=True)

    def send_error(self, error: GiftstreamError, rid: str | None) -> None:
        """Answer an error as the table says: an `error` frame, or a close for a
        connection-level one."""
        spec = ERRORS[error.code]
        if spec.ws_close is not None:
            self.close_with(spec.ws_close, error.message)
            return
        metrics.ERRORS.labels(error.code.value).inc()
        frame: dict[str, Any] = {"t": "error", "code": error.code.value, "message": error.message}
        if rid is not None:
            frame["id"] = rid
        if error.retry:
            frame["retry"] = True
        self.send(frame)
