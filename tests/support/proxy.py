"""A TCP proxy between a test's clients and the server, which cuts connections on demand.

Cutting here is what a lost network does to the client: the socket ends with no close frame.
The proxy reads no WebSocket frames: it watches the server-to-client bytes, which are not
masked, so a string the server sends (a gift id in an ack) appears in them as plain bytes.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Self

CHUNK_BYTES = 65_536


class Pair:
    """One client connection and its connection to the server."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        # The end of the last chunk from the server: a pattern may straddle two reads.
        self.tail = b""

    def cut(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class Forwarder:
    """Accepts connections and forwards each, both ways, through a connection of its own to the
    server, until either side ends; subclasses say where the server is and what passes."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._pairs: set[Pair] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop listening (the port refuses connections from now on) and cut every connection."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        self.cut_all()
        await asyncio.gather(*self._handlers)

    def cut_all(self) -> None:
        """Cut every current connection, as a network failure would."""
        for pair in list(self._pairs):
            pair.cut()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to the server."""
        raise NotImplementedError

    def _admits(self) -> bool:
        """Whether a new connection is forwarded (False: it is cut at once)."""
        return True

    def _passes(self, pair: Pair, chunk: bytes, from_server: bool) -> bool:
        """Whether `chunk` is forwarded (False: it is lost; cutting `pair` ends the
        connection)."""
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if not self._admits():
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await self._connect()
            except OSError:
                writer.transport.abort()
                return
            pair = Pair(writer, up_writer)
            self._pairs.add(pair)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, pair, from_server=False),
                    self._pump(up_reader, writer, pair, from_server=True),
                )
            finally:
                self._pairs.discard(pair)
        finally:
            self._handlers.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: Pair,
        from_server: bool,
    ) -> None:
        try:
            while chunk := await source.read(CHUNK_BYTES):
                if self._passes(pair, chunk, from_server):
                    sink.write(chunk)
                    await sink.drain()
        except ConnectionError:
            pass
        finally:
            # One direction ending ends the connection: both sides see it cut.
            pair.cut()


class Proxy(Forwarder):
    """A TCP proxy in front of the server on 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.port = 0
        # Connections forwarded to the server so far: one more per reconnect.
        self.accepted = 0
        # Connections cut at once because the proxy was offline.
        self.refused = 0
        self._online = True
        self._cut_pattern: bytes | None = None
        self._cut_done = asyncio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @contextlib.asynccontextmanager
    async def offline(self) -> AsyncIterator[None]:
        """Cut every connection, and cut new ones at once until the block ends."""
        self._online = False
        self.cut_all()
        try:
            yield
        finally:
            self._online = True

    def cut_when_server_sends(self, pattern: bytes) -> asyncio.Event:
        """Cut the connection whose server side sends `pattern` next, before forwarding the
        bytes that hold it; the returned event is set once it has been cut."""
        self._cut_pattern = pattern
        self._cut_done = asyncio.Event()
        return self._cut_done

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connection = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.accepted += 1
        return connection

    def _admits(self) -> bool:
        if not self._online:
            self.refused += 1
        return self._online

    def _passes(self, pair: Pair, chunk: bytes, from_server: bool) -> bool:
        pattern = self._cut_pattern
        if not from_server or pattern is None:
            return True
        window = pair.tail + chunk
        if pattern in window:
            self._cut_pattern = None
            self._cut_done.set()
            pair.cut()
            return False
        pair.tail = window[-len(pattern) + 1 :] if len(pattern) > 1 else b""
        return True
