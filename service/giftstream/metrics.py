"""Prometheus metrics of one worker process."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge("giftstream_connections", "Open WebSocket connections", registry=REGISTRY)
ROOMS_SUBSCRIBED = Gauge(
    "giftstream_rooms_subscribed", "Rooms this worker is subscribed to", registry=REGISTRY
)
FRAMES_IN = Counter("giftstream_frames_in_total", "Frames received", registry=REGISTRY)
FRAMES_OUT = Counter("giftstream_frames_out_total", "Frames queued for sending", registry=REGISTRY)
FRAMES_DROPPED = Counter(
    "giftstream_frames_dropped_total", "Lossy frames dropped for slow clients", registry=REGISTRY
)
GIFTS = Counter("giftstream_gifts_total", "Gift requests answered", ["result"], registry=REGISTRY)
ERRORS = Counter("giftstream_errors_total", "Error answers by code", ["code"], registry=REGISTRY)
CLOSES = Counter(
    "giftstream_closes_total", "Connections closed by the server", ["reason"], registry=REGISTRY
)
RELAYED = Counter(
    "giftstream_relayed_credits_total", "Credits re-applied by the relay", registry=REGISTRY
)
GIFT_SECONDS = Histogram(
    "giftstream_gift_seconds",
    "Time from a gift frame to its ack (debit and credit included)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
LIMITED = Counter(
    "giftstream_limited_total",
    "Requests and connections refused by a limit",
    ["limit"],
    registry=REGISTRY,
)
REDIS_ROUND_TRIPS = Counter(
    "giftstream_redis_round_trips_total",
    "Pipelines sent to the store by the gift path (each one write and one read)",
    registry=REGISTRY,
)
REDIS_COMMANDS = Counter(
    "giftstream_redis_commands_total",
    "Commands the gift path sent to the store, in those pipelines",
    registry=REGISTRY,
)
ARCHIVE_ACTIVE = Gauge(
    "giftstream_archive_active",
    "1 in the worker whose archiver holds the lease (the archive metrics below are its own)",
    registry=REGISTRY,
)
ARCHIVE_LAG_ENTRIES = Gauge(
    "giftstream_archive_lag_entries",
    "Ledger entries and room events in Valkey not yet copied to PostgreSQL",
    registry=REGISTRY,
)
ARCHIVE_LAG_SECONDS = Gauge(
    "giftstream_archive_lag_seconds",
    "Age of the oldest entry not yet copied to PostgreSQL (0 when caught up)",
    registry=REGISTRY,
)
ARCHIVED_ROWS = Counter(
    "giftstream_archived_rows_total",
    "Rows written to PostgreSQL by the archiver (a re-sent row is not counted)",
    ["table"],
    registry=REGISTRY,
)
ARCHIVE_BATCH_SECONDS = Histogram(
    "giftstream_archive_batch_seconds",
    "Time to write one archive batch to PostgreSQL (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
ARCHIVE_FAILURES = Counter(
    "giftstream_archive_failures_total",
    "Archiver passes that failed (PostgreSQL or Valkey unreachable); each is retried",
    registry=REGISTRY,
)
VALKEY_USED_MEMORY = Gauge(
    "giftstream_valkey_used_memory_bytes",
    "Valkey's used_memory (summed over the primaries of a cluster)",
    registry=REGISTRY,
)
ARCHIVE_TRIMMED = Counter(
    "giftstream_archive_trimmed_entries_total",
    "Archived entries trimmed from Valkey (PostgreSQL holds them), per kind of stream",
    ["stream"],
    registry=REGISTRY,
)
ARCHIVE_PRUNED = Counter(
    "giftstream_archive_pruned_credits_total",
    "Rooms' `credited` records pruned from Valkey (archived, past the hot window)",
    registry=REGISTRY,
)
ANSWERS_PRUNED = Counter(
    "giftstream_archive_pruned_answers_total",
    "Gift requests' stored answers deleted from Valkey (archived, past the hot window)",
    registry=REGISTRY,
)
COLD_CHECKS = Counter(
    "giftstream_idempotency_cold_checks_total",
    "Gift request ids looked up in PostgreSQL (no stored answer, the filter may have seen them),"
    " by what it said: archived, absent (the filter's false positive), unreachable",
    ["result"],
    registry=REGISTRY,
)
