"""The service in child processes: `giftstream serve` on a free port of 127.0.0.1, and the
settings test servers share."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .api import Api
from .stores import database_for

READY_TIMEOUT_S = 30.0
# The token secret of test servers (unless a test says otherwise): servers on one store accept
# each other's tokens, and tests can sign tokens as the servers do.
TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGH"
# The settings of the shared test servers: streaks end quickly, and tests gift as fast as they
# can (the default gift rate limit has tests of its own).
SHARED_ENV = {
    "GIFTSTREAM_STREAK_TIMEOUT_MS": "400",
    "GIFTSTREAM_GIFT_RATE_PER_S": "100000",
    "GIFTSTREAM_GIFT_BURST": "1000000",
    # Tests read their connections when they are ready to; slow consumers have tests of their own.
    "GIFTSTREAM_SEND_QUEUE_BYTES": str(8 * 1024 * 1024),
}
# Tests read the ledgers in Valkey as their oracle, and a store's active archiver may be any
# server on it: every test server keeps archived entries an hour unless its test says otherwise
# (the tests of trimming do, with TRIMMING_ARCHIVE, on stores of their own).
KEEP_ARCHIVED = {"GIFTSTREAM_ARCHIVE_KEEP_S": "3600"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`giftstream serve` in a child process, on a free port of 127.0.0.1."""

    redis_url: str | None
    data_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # `--dev` (enables /v1/dev/*); False runs the server as in production.
    dev: bool = True
    # The ledger's PostgreSQL. Unset: with a data directory, the embedded one there; without, the
    # store's own database on the session's PostgreSQL (chosen at the first start).
    database_url: str | None = None
    # `serve`, or `demo` (dev mode with bot rooms, `args` e.g. ["--rooms", "1"]).
    command: str = "serve"
    args: list[str] = field(default_factory=list)
    # GIFTSTREAM_SECRET; None: the server reads or generates `<data dir>/secret` (`env` wins).
    secret: str | None = TEST_SECRET

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self) -> "ServerProcess":
        args = [sys.executable, "-m", "giftstream.cli", self.command, "--port", str(self.port)]
        if self.dev and self.command == "serve":
            args.append("--dev")
        args += self.args
        args += ["--workers", str(self.workers), "--log-level", "warning"]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        if self.data_dir:
            args += ["--data-dir", str(self.data_dir)]
        if self.database_url is None and self.data_dir is None and self.redis_url:
            self.database_url = database_for(self.redis_url)
        if self.database_url:
            args += ["--database-url", self.database_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
        if self.secret is not None:
            env["GIFTSTREAM_SECRET"] = self.secret
        env.update(KEEP_ARCHIVED)
        env.update(self.env)
        log_dir = Path(os.environ.get("TESTS_LOG_DIR", "/tmp"))
        self.log_path = log_dir / f"giftstream-test-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in time:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait_exit(self, timeout_s: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)


def logged(server: ServerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    """A check (for `eventually`) that holds once the end of the server's log shows `text`."""

    async def check() -> bool:
        return text in await asyncio.to_thread(server.log)

    return check


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def on_both_stores() -> Any:
    """A `server` fixture for a test module whose tests must hold on one Valkey and on a Valkey
    Cluster alike: each test runs once against each (`server = on_both_stores()`)."""

    @pytest.fixture(params=["valkey", "cluster"])
    def server(request: pytest.FixtureRequest) -> ServerProcess:
        found: ServerProcess = request.getfixturevalue(f"{request.param}_server")
        return found

    return server


@contextlib.asynccontextmanager
async def serving(server: ServerProcess) -> AsyncIterator[tuple[ServerProcess, Api]]:
    """A started server and an HTTP client of it; both stopped when the block ends."""
    try:
        await asyncio.to_thread(server.start)
        async with Api(server.base_url) as api:
            yield server, api
    finally:
        await asyncio.to_thread(server.stop)
