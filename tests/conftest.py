"""Fixtures that start real parts: an embedded Valkey, and the service on a free port."""

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from giftstream.store.connection import Redis, connect
from giftstream.store.embedded import EmbeddedValkey
from proxy import Proxy
from support import Api, ServerProcess, running

# Short enough for tests to see streaks end quickly; a setting like any other.
TEST_STREAK_TIMEOUT_MS = "400"


@pytest.fixture(scope="session")
def valkey() -> Iterator[EmbeddedValkey]:
    path = Path(tempfile.mkdtemp(prefix="gs-"))
    server = EmbeddedValkey(path / "data")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """One service process shared by the tests that need no special settings."""
    env = {
        "GIFTSTREAM_STREAK_TIMEOUT_MS": TEST_STREAK_TIMEOUT_MS,
        # Tests gift as fast as they can; the default gift rate limit has tests of its own.
        "GIFTSTREAM_GIFT_RATE_PER_S": "100000",
        "GIFTSTREAM_GIFT_BURST": "1000000",
    }
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    client = Api(server.base_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis(valkey: EmbeddedValkey) -> AsyncIterator[Redis]:
    client = connect(valkey.url)
    yield client
    await client.aclose()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: a unix socket path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="gs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_valkey(short_tmp: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey of the test's own, for tests that need an empty store (audit, restarts)."""
    server = EmbeddedValkey(short_tmp / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[Proxy]:
    """A TCP proxy in front of the shared server, to cut connections from the server's side."""
    p = await Proxy(server.port).start()
    yield p
    await p.close()
