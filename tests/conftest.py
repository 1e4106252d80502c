"""Fixtures that start real parts: an embedded Valkey, and the service on a free port."""

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from giftstream.domain.economy import load_economy
from giftstream.store.connection import Redis, connect
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.embedded_cluster import EmbeddedCluster
from support import SHARED_ENV, Api, ServerProcess, running, temporary_cluster, temporary_valkey
from support.economy import PromoServer, promo_economy_text
from support.installs import install_client
from support.proxy import Proxy

# The browser tests' fixtures (Chromium, the page's server, a fresh profile), shared by their files.
pytest_plugins = ["support.browser_fixtures", "support.ledger_fixtures"]


@pytest.fixture(scope="session")
def valkey() -> Iterator[EmbeddedValkey]:
    with temporary_valkey() as server:
        yield server


@pytest.fixture(scope="session")
def valkey_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """One service process on one Valkey, shared by the tests that need no special settings."""
    with running(ServerProcess(valkey.url, env=SHARED_ENV)) as s:
        yield s


@pytest.fixture(scope="session")
def cluster() -> Iterator[EmbeddedCluster]:
    """A 3-primary Valkey Cluster with a replica each, on loopback."""
    with temporary_cluster() as nodes:
        yield nodes


@pytest.fixture(scope="session")
def cluster_server(cluster: EmbeddedCluster) -> Iterator[ServerProcess]:
    """One service process on the cluster."""
    with running(ServerProcess(cluster.url, env=SHARED_ENV)) as s:
        yield s


@pytest.fixture
def server(valkey_server: ServerProcess) -> ServerProcess:
    """The shared service. Modules that must hold on one Valkey and on a cluster alike override
    this fixture with `on_both_stores`."""
    return valkey_server


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    async with Api(server.base_url) as client:
        yield client


@pytest.fixture
async def redis(server: ServerProcess) -> AsyncIterator[Redis]:
    """A client of the store the `server` fixture uses."""
    assert server.redis_url is not None
    client = connect(server.redis_url)
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


# The coin economy's tests (e2e/economy/): a server whose promotions are active now.


@pytest.fixture(scope="module")
def promo_economy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("economy") / "economy.toml"
    path.write_text(promo_economy_text(datetime.now(UTC)))
    return path


@pytest.fixture(scope="module")
def promo(valkey: EmbeddedValkey, promo_economy_path: Path) -> Iterator[PromoServer]:
    env = {"GIFTSTREAM_ECONOMY_PATH": str(promo_economy_path)}
    with running(ServerProcess(valkey.url, env=env)) as server:
        yield PromoServer(server, load_economy(promo_economy_path), promo_economy_path)


@pytest.fixture(scope="session")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv outside the checkout holding `pip install clients/python` alone."""
    return install_client(tmp_path_factory.mktemp("client-user"))
