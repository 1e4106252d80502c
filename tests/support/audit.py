"""`giftstream audit` and the archiver as tests see them: the audit's flags for a store, the audit
in a child process, and the ledger streams in Valkey that the archiver trims."""

from giftstream.store import keys
from giftstream.store.connection import Redis

from .children import giftstream_cli
from .stores import database_for
from .waiting import poll

# The archiver at test speed, trimming Valkey's ledgers as soon as PostgreSQL holds them.
TRIMMING_ARCHIVE = {
    "GIFTSTREAM_ARCHIVE_INTERVAL_S": "0.05",
    "GIFTSTREAM_ARCHIVE_SCAN_INTERVAL_S": "0.1",
    "GIFTSTREAM_ARCHIVE_LEASE_MS": "1000",
    "GIFTSTREAM_ARCHIVE_BACKOFF_MAX_S": "0.3",
    "GIFTSTREAM_ARCHIVE_KEEP_S": "0",
}
LEDGER_PATTERNS = (keys.USER_LEDGER_PATTERN, keys.ROOM_LEDGER_PATTERN)


def audit_flags(redis_url: str) -> list[str]:
    """`giftstream audit` flags for the store at `redis_url` and its deployment's ledger."""
    return ["--redis-url", redis_url, "--database-url", database_for(redis_url)]


async def audit_cli(*args: str) -> tuple[int, str]:
    """`giftstream audit ARGS` in a child process: its exit code and its output."""
    code, out, _ = await giftstream_cli("audit", *args)
    return code, out


async def audit(redis_url: str) -> tuple[int, str]:
    """`giftstream audit` of the store at `redis_url` and its deployment's ledger."""
    return await audit_cli(*audit_flags(redis_url))


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
    return await poll(
        lambda: ledger_lengths(r),
        lambda lengths: bool(lengths) and all(held == 0 for held, _ in lengths.values()),
        timeout,
        "ledgers trimmed",
    )
