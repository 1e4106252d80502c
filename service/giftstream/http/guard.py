"""HTTP connections with deadlines and a bound per address: uvicorn's httptools protocol plus
what it lacks. uvicorn has no time limit on a request's headers or body (its keep-alive timer
starts only after a first response, and any byte cancels it), no cap on header bytes, and only a
global concurrency limit; a client trickling a byte every few seconds held a connection forever.

`giftstream serve` runs uvicorn with `http="giftstream.http.guard:GuardedHttp"`. A WebSocket
upgrade leaves this protocol (and its count) for the WebSocket limits of realtime/limits.py.
"""

import asyncio
import functools
import ipaddress
import json
from collections import Counter
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from giftstream import metrics
from giftstream.errors import ERRORS, ErrorCode
from giftstream.settings import Settings

# Open HTTP connections of each address in this worker process.
_OPEN: Counter[str] = Counter()


@functools.cache
def _settings() -> Settings:
    # The worker's settings, as `giftstream serve` put them in its environment (like create_app).
    return Settings.from_env()


def _response(code: ErrorCode, message: str) -> bytes:
    """A complete error response that closes the connection, in the shape of every error body."""
    status = ERRORS[code].http
    body = json.dumps({"code": code.value, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_MANY = _response(ErrorCode.RATE_LIMITED, "too many connections from this address")
TIMED_OUT = _response(ErrorCode.REQUEST_TIMEOUT, "the request did not arrive in time")
HEADERS_TOO_LARGE = _response(
    ErrorCode.HEADERS_TOO_LARGE, "the request line and headers are too large"
)


@functools.cache
def _proxies(allowed: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    """uvicorn's FORWARDED_ALLOW_IPS as networks; None: every address ("*")."""
    parts = [p.strip() for p in allowed.split(",") if p.strip()]
    if "*" in parts:
        return None
    networks = []
    for part in parts:
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            continue  # a unix socket path or a name: no address to match
    return tuple(networks)


def is_proxy(ip: str, forwarded_allow_ips: str | list[str]) -> bool:
    """Whether uvicorn believes this peer's X-Forwarded-For: a proxy carries many clients on
    its connections, and bounds them itself (deploy/nginx.conf), so it is not counted here."""
    allowed = (
        forwarded_allow_ips
        if isinstance(forwarded_allow_ips, str)
        else ",".join(forwarded_allow_ips)
    )
    networks = _proxies(allowed)
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


class GuardedHttp(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = _settings()
        self._deadline: asyncio.TimerHandle | None = None
        # What the deadline waits for: a request's headers (True) or its body.
        self._awaiting_headers = True
        self._counted: str | None = None
        self._header_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = self.client[0] if self.client else None  # None: a unix socket
        if ip is not None and self._counts(ip):
            if _OPEN[ip] >= self._limits.http_max_connections_per_ip:
                metrics.LIMITED.labels("http_connections_per_ip").inc()
                self._refuse(TOO_MANY)
                return
            _OPEN[ip] += 1
            self._counted = ip
        self._arm_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # Between requests any byte starts the header clock (and cancels uvicorn's keep-alive
        # timer): blank lines between requests begin no message but must not hold the line.
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_headers()
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._uncount()
        super().handle_websocket_upgrade()

    # Parser callbacks: a request's headers, then its body, each on a deadline.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._deadline is None:  # a pipelined request, behind one being handled
            self._arm_headers()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._arm(self._limits.http_body_timeout_s, headers=False)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()

    # --

    def _counts(self, ip: str) -> bool:
        if ip in self._limits.trusted_ips:
            return False
        return not is_proxy(ip, self.config.forwarded_allow_ips)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._limits.http_max_header_bytes and not self._refused:
            metrics.LIMITED.labels("http_header_bytes").inc()
            self._refuse(HEADERS_TOO_LARGE)

    def _arm_headers(self) -> None:
        self._arm(self._limits.http_header_timeout_s, headers=True)

    def _arm(self, delay_s: float, *, headers: bool) -> None:
        self._disarm()
        self._awaiting_headers = headers
        self._deadline = self.loop.call_later(delay_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _uncount(self) -> None:
        if self._counted is not None:
            _OPEN[self._counted] -= 1
            if _OPEN[self._counted] <= 0:
                del _OPEN[self._counted]
            self._counted = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        metrics.LIMITED.labels("http_read_timeout").inc()
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._awaiting_headers and not answering:
            self._refuse(TIMED_OUT)
        else:
            # A body (or a pipelined request behind a response still being written): the
            # handler waiting for it sees the client disconnect.
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._refused = True
        self._disarm()
        self.transport.write(response)
        self.transport.close()
