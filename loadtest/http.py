"""A small HTTP/1.1 JSON client with keep-alive connections: the set-up (users, rooms, wallets)
and the `recharge` scenario. Cheaper per request than a general client, and it needs no
dependency beyond the standard library."""

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 65_536


class HttpError(Exception):
    pass


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    return parts.hostname, parts.port or 80


class HttpConnection:
    """One keep-alive connection; requests on it are sequential."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """(status, decoded JSON body). A reused connection the server closed meanwhile is
        reopened once, before any byte of an answer was read."""
        reused = self._writer is not None
        try:
            return await asyncio.wait_for(self._exchange(method, path, body, token), self.timeout_s)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            self._drop()
            if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                raise HttpError(f"{method} {path}: {e!r}") from e
        except BaseException:
            self._drop()
            raise
        try:
            return await asyncio.wait_for(self._exchange(method, path, body, token), self.timeout_s)
        except BaseException:
            self._drop()
            raise

    async def _exchange(
        self, method: str, path: str, body: Any, token: str | None
    ) -> tuple[int, Any]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        payload = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body is not None:
            head += ["Content-Type: application/json"]
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        head.append(f"Content-Length: {len(payload)}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        if len(raw) > MAX_HEAD_BYTES:
            raise HttpError("response head too large")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        closing = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                closing = True
            elif name == "transfer-encoding":
                raise HttpError("chunked responses are not supported")
        if length is None:
            raise HttpError("response without Content-Length")
        data = await self._reader.readexactly(length)
        if closing:
            await self.close()
        return status, json.loads(data) if data else None

    def _drop(self) -> None:
        """Forget a connection in an unknown state (an error or a timeout mid-exchange)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HttpPool:
    """A few connections shared by many tasks."""

    def __init__(self, url: str, size: int, timeout_s: float = 30.0) -> None:
        host, port = split_url(url)
        self._idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        self._all = [HttpConnection(host, port, timeout_s) for _ in range(size)]
        for connection in self._all:
            self._idle.put_nowait(connection)

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        connection = await self._idle.get()
        try:
            return await connection.request(method, path, body, token)
        finally:
            self._idle.put_nowait(connection)

    async def ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """The body of a 200 answer; anything else raises."""
        status, answer = await self.request(method, path, body, token)
        if status != 200:
            raise HttpError(f"{method} {path} answered {status}: {answer}")
        return answer

    async def aclose(self) -> None:
        for connection in self._all:
            await connection.close()
