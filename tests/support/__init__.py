"""Helpers for tests that run the real service, one module a job:

- servers: `giftstream serve` in child processes (ServerProcess, running, serving, free_port) and
  the settings test servers share;
- stores: the session's PostgreSQL, clients of a Valkey, crashing one;
- api: the HTTP API as a client program uses it; users: the users it hands out;
- frames: the raw-frame WebSocket `Client`; connections: `connected()` (`giftstream_client`) and
  `raw_connected()`;
- waiting: polling with a deadline (eventually, settles, poll);
- audit: `giftstream audit` in a child process and the ledgers the archiver trims;
- children: a program or the `giftstream` command line in a child process, with a deadline.

Tests import from here (`from support import ...`): tests/ is on pytest's pythonpath. The helpers
of one group of tests are modules of their own, imported by name and not re-exported here:
economy (tests/e2e/economy/), rooms (tests/e2e/rooms/), storm (tests/e2e/faults/), fuzz_oracle,
fuzz_frames and fuzzer (the fuzz run), deploy (tests/deploy/), room_kit (the room core's unit
tests), installs (tests/install/ and the client fixture), proxy (a TCP proxy that cuts
connections), client_harness (tests/client/), browser (tests/browser/; its fixtures are
browser_fixtures, registered in tests/conftest.py).
"""

from .api import Api, metric
from .audit import (
    LEDGER_PATTERNS,
    TRIMMING_ARCHIVE,
    audit,
    audit_cli,
    audit_flags,
    ledger_lengths,
    wait_ledgers_trimmed,
)
from .children import giftstream_cli, run_child
from .connections import connected, first_event, gift_burst, member, raw_connected, raw_opened
from .frames import DROP, RECV_TIMEOUT_S, Client, Frame, changed
from .servers import (
    KEEP_ARCHIVED,
    READY_TIMEOUT_S,
    SHARED_ENV,
    TEST_SECRET,
    ServerProcess,
    free_port,
    logged,
    on_both_stores,
    running,
    serving,
)
from .stores import (
    crash,
    database_for,
    fresh_database,
    history_positions,
    room_history,
    shared_postgres,
    shut_down_leftover_valkey,
    store,
    temporary_cluster,
    temporary_valkey,
    user_accounts,
)
from .users import BIG_NAME, User, bearer
from .waiting import POLL_S, WAIT_S, eventually, poll, settles

__all__ = [
    "BIG_NAME",
    "DROP",
    "KEEP_ARCHIVED",
    "LEDGER_PATTERNS",
    "POLL_S",
    "READY_TIMEOUT_S",
    "RECV_TIMEOUT_S",
    "SHARED_ENV",
    "TEST_SECRET",
    "TRIMMING_ARCHIVE",
    "WAIT_S",
    "Api",
    "Client",
    "Frame",
    "ServerProcess",
    "User",
    "audit",
    "audit_cli",
    "audit_flags",
    "bearer",
    "changed",
    "connected",
    "crash",
    "database_for",
    "eventually",
    "first_event",
    "free_port",
    "fresh_database",
    "gift_burst",
    "giftstream_cli",
    "history_positions",
    "ledger_lengths",
    "logged",
    "member",
    "metric",
    "on_both_stores",
    "poll",
    "raw_connected",
    "raw_opened",
    "room_history",
    "run_child",
    "running",
    "serving",
    "settles",
    "shared_postgres",
    "shut_down_leftover_valkey",
    "store",
    "temporary_cluster",
    "temporary_valkey",
    "user_accounts",
    "wait_ledgers_trimmed",
]
