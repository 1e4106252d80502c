"""Fixtures of the ledger-of-record tests (tests/e2e/ledger): a pytest plugin of conftest.py."""

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from giftstream.store.embedded_cluster import EmbeddedCluster
from support import (
    fresh_database,
    temporary_cluster,
)


@pytest.fixture
def database() -> str:
    """A fresh, empty database: one deployment's ledger of record."""
    return fresh_database()


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of the test's own (one deployment: its lease, its database), no replicas."""
    with temporary_cluster(replicas_each=0) as nodes:
        yield nodes
