"""The client's connection over time: opened with backoff, authenticated, its rooms joined again
from where they were; read until it drops, then opened again, until the client is closed or the
backoff runs out."""

import asyncio
import logging
import random
from collections.abc import Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from giftstream_client._codec import Codec, Undecodable
from giftstream_client._link import Dropped, Link
from giftstream_client._receiver import Receiver, join_frame
from giftstream_client.backoff import Backoff
from giftstream_client.errors import (
    ClientClosed,
    ClientError,
    ConnectionFailed,
    InternalError,
    ProtocolError,
    Unavailable,
    server_error,
)
from giftstream_client.events import Frame, Welcome

log = logging.getLogger("giftstream_client")

# Failures after which another connection attempt may succeed (`internal` and `unavailable`
# say so themselves).
_RETRYABLE = (OSError, TimeoutError, WebSocketException, Dropped, InternalError, Unavailable)
CLOSE_PROTOCOL_ERROR = 1002


class Connection:
    """One user's WebSocket, kept open: `ready_link()` is the link to send on once it is
    connected, authenticated and rejoined, and raises once the client is closed or failed."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        codec: Codec,
        backoff: Backoff,
        open_timeout_s: float,
        receiver: Receiver,
        next_id: Callable[[], str],
        rng: random.Random,
    ) -> None:
        self.url = url
        self._token = token
        self._codec = codec
        self._backoff = backoff
        self._open_timeout_s = open_timeout_s
        self._receiver = receiver
        self._next_id = next_id
        self._rng = rng
        self.link: Link | None = None
        # Set while `link` is usable, or once the client is closed or failed.
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.welcome: Welcome | None = None
        self._failure: ClientError | None = None
        self.closed = False

    @property
    def started(self) -> bool:
        return self._supervisor is not None

    async def start(self) -> None:
        """Connect and authenticate, then keep the connection open in the background."""
        link = await self._connect_with_backoff(first=True)
        self._use(link)
        self._supervisor = asyncio.create_task(self._supervise(link), name="giftstream-client")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._ready.set()
        link, self.link = self.link, None
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        if link is not None:
            await link.close()
        self._receiver.inbox.end(None)

    async def ready_link(self) -> Link:
        """The connection to send on, once connected, authenticated and rejoined."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self.closed:
                raise ClientClosed("the client is closed")
            if self._supervisor is None:
                raise RuntimeError("not connected yet: call connect() first")
            if self.link is not None:
                return self.link
            await self._ready.wait()

    async def _connect_with_backoff(self, *, first: bool) -> Link:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delays = self._backoff.delays(self._rng)
        attempts = 0
        error: BaseException | None = None
        while attempts < self._backoff.max_attempts:
            if self._failure is not None:
                raise self._failure
            # A first connect tries at once; a reconnect waits, so clients cut off together
            # spread their returns.
            if attempts or not first:
                delay = next(delays)
                if loop.time() - started + delay > self._backoff.max_elapsed_s:
                    break
                await asyncio.sleep(delay)
            attempts += 1
            try:
                return await self._establish()
            except _RETRYABLE as e:
                log.debug("connecting to %s failed: %r", self.url, e)
                error = e
        elapsed = loop.time() - started
        raise ConnectionFailed(
            f"could not connect to {self.url}: {attempts} attempts in {elapsed:.1f} s"
            f" failed (last: {error!r})",
            attempts,
        ) from error

    async def _establish(self) -> Link:
        """Open a connection, authenticate, and join every room again from where it was."""
        ws = await connect(
            self.url,
            subprotocols=[Subprotocol(self._codec.subprotocol)],
            compression=None,
            open_timeout=self._open_timeout_s,
        )
        link = Link(ws, self._codec)
        link.reader = asyncio.create_task(self._read(link), name="giftstream-client-reader")
        try:
            async with asyncio.timeout(self._open_timeout_s):
                auth: Frame = {"t": "auth", "id": self._next_id(), "token": self._token}
                if self._receiver.receive_events:
                    # The room frames beyond protocol v1 (`room` → RoomState) and batches.
                    auth["extras"] = True
                answer = await link.ask(auth)
                if answer["t"] == "error":
                    raise server_error(answer)
                self.welcome = Welcome.from_frame(answer)
                # Rooms never joined yet are left to their own `join` call, which reports its
                # refusal to its caller instead of failing the client.
                rooms = self._receiver.rooms.values()
                for state in [r for r in rooms if r.epoch is not None]:
                    answer = await link.ask(join_frame(state, self._next_id()))
                    if answer["t"] == "error":
                        raise server_error(answer)
        except BaseException:
            await link.close()
            raise
        return link

    async def _supervise(self, link: Link) -> None:
        """Wait for the connection to end, then reconnect; fail the client if that fails."""
        while True:
            assert link.reader is not None
            await link.reader
            if self.closed or self._failure is not None:
                return
            log.info("connection to %s lost; reconnecting", self.url)
            try:
                link = await self._connect_with_backoff(first=False)
            except ClientError as e:
                self._fail(e)
                return
            self._use(link)

    def _use(self, link: Link) -> None:
        self.link = link
        self._ready.set()

    def _fail(self, error: ClientError) -> None:
        if self._failure is None:
            self._failure = error
        self.link = None
        self._ready.set()
        self._receiver.inbox.end(error)

    async def _read(self, link: Link) -> None:
        try:
            async for message in link.ws:
                self._receiver.messages += 1
                self._receiver.dispatch(link, self._codec.decode(message))
        except ConnectionClosed:
            pass
        except (Undecodable, ProtocolError, LookupError, TypeError) as e:
            # Resuming would read the same frame again: this client cannot go on.
            self._fail(ProtocolError(f"the server sent a frame this client cannot read: {e!r}"))
            await link.close(CLOSE_PROTOCOL_ERROR, "unreadable frame")
        finally:
            link.drop()
            if self.link is link:
                # Unusable from now on: callers wait for the reconnect.
                self.link = None
                self._ready.clear()
