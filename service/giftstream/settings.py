"""Settings: one typed object, read from the environment only here and in the CLI.

One module (~330 lines): one table of every setting, and the parsing that reads it.
"""

import math
import os
import re
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

ENV_PREFIX = "GIFTSTREAM_"

AofFsync = Literal["always", "everysec", "no"]
Fault = Literal["crash_after_debit", "lose_debit_reply", "crash_after_credit"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every limit and knob of the service, each with a safe default.

    Each field can be set by the environment variable GIFTSTREAM_<FIELD NAME IN CAPITALS>.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Unset: an embedded Valkey is started with its data in `data_dir`.
    redis_url: str | None = None
    data_dir: Path = Path(".giftstream")
    # Enables /v1/dev/* (simulated users with free coins).
    dev: bool = False
    # Token-signing secret. Unset: read from `secret_file`, or generated once in
    # `<data_dir>/secret` (mode 0600); never kept in the store. Outside dev mode a weak one
    # (under 32 bytes, repetitive, a placeholder) is refused at start-up.
    secret: str | None = None
    # During a key rotation: the secret tokens were signed with until now (still accepted).
    secret_previous: str | None = None
    # A file (mode 0600) holding the secret on its first line, and the previous one on an
    # optional second line; for operators with a secret store that mounts files.
    secret_file: Path | None = None
    token_ttl_s: int = 30 * 24 * 3600
    # Largest WebSocket frame accepted; a larger one closes the connection with 1009.
    max_frame_bytes: int = 64 * 1024
    # Bytes a connection may have queued for sending before lossy frames are dropped and,
    # for a lossless frame that cannot fit, the connection is closed as a slow consumer. The
    # kernel's send buffer of the socket counts towards it.
    send_queue_bytes: int = 256 * 1024
    # Each socket's send buffer (SO_SNDBUF), fixed: the kernel holds up to twice this for it.
    socket_send_buffer_bytes: int = 32 * 1024
    # A connection that stays behind (its queue full, frames dropped) this long is closed as a
    # slow consumer (1008): it resumes from its last offset when it reads again.
    slow_reader_timeout_s: float = 30.0
    # A streak continues while taps of the same gift come within this time of each other.
    streak_timeout_ms: int = 3000
    # Lossy room frames (streak updates, viewer counts, leaderboards) are merged per room and
    # sent at most once per tick; credits and acks are never delayed by it.
    coalesce_tick_ms: int = 50
    # A worker's share of a room's viewer count expires unless refreshed (a dead worker's
    # viewers stop counting after this long).
    presence_ttl_s: int = 15
    # Rooms with at most this many viewers get a `presence` frame for each join and leave.
    presence_frames_max_viewers: int = 50
    # The session's top gifters shown in `leaderboard` frames.
    leaderboard_size: int = 5
    # All-time coins to a host that make a viewer a long-time supporter (a badge).
    supporter_coins: int = 10_000
    # A gift of at least this many coins is flagged for the host to thank.
    big_gift_coins: int = 1_000
    # A treasure chest opens this long after it is dropped, and can be claimed for this long.
    chest_countdown_ms: int = 10_000
    chest_claim_ms: int = 10_000
    # A LIVE battle lasts `battle_duration_s` unless the inviter asks for another length
    # within the bounds; an invite not accepted by every side within `battle_invite_ttl_s`
    # expires. The end names this many top gifters per side.
    battle_duration_s: int = 300
    battle_min_duration_s: int = 30
    battle_max_duration_s: int = 3600
    battle_invite_ttl_s: int = 60
    battle_top_gifters: int = 3
    # Invites per host (withdrawn ones too: each is a frame in the invited rooms): a token
    # bucket, `battle_invite_burst` at once, then `battle_invites_per_min`.
    battle_invites_per_min: int = 10
    battle_invite_burst: int = 5
    # A battle's state and result stay readable (GET /v1/battles/{id}) this long after it ends.
    battle_keep_s: int = 7 * 24 * 3600
    # Gifts per user: a token bucket shared by every worker — `gift_burst` at once, refilled at
    # `gift_rate_per_s` (a streak of taps is bursty by nature: the burst is generous).
    gift_rate_per_s: float = 50.0
    gift_burst: int = 300
    # Connections and their use, per worker process.
    max_connections_per_user: int = 20
    max_connections_per_ip: int = 200
    connection_attempts_per_ip_per_s: float = 50.0
    max_rooms_per_connection: int = 20
    # A WebSocket that has not authenticated this long after it opened is closed (1008).
    auth_timeout_s: float = 5.0
    # The server pings every connection this often; one whose pong has not come this long
    # after the ping is closed (1011). A viewer that only watches still answers pings.
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    # Addresses the per-address limits do not apply to (loopback: local tools and tests; a
    # deployment behind a proxy should pass the client's address with proxy headers). "none"
    # trusts no address.
    trusted_ips: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    # Origins allowed to open a WebSocket from a browser ("*": any). A request without an
    # Origin header (a program) or from the server's own origin is always allowed.
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    # Host headers answered ("*": any), beside the address the server listens on; any other
    # gets 400, so that a page on a rebound DNS name cannot reach a server on loopback.
    allowed_hosts: frozenset[str] = frozenset({"127.0.0.1", "localhost", "[::1]"})
    # Largest HTTP request body; a larger one gets 413 before it is read.
    max_body_bytes: int = 64 * 1024
    # An HTTP request's headers must arrive within this long of the connection (or of the
    # request's first byte on a kept-alive one), and its body within this long of its headers;
    # a connection that is slower is closed (slowloris).
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    # Most bytes of request line and headers; more get 431 and the connection is closed.
    http_max_header_bytes: int = 16 * 1024
    # An idle kept-alive HTTP connection is closed after this long (uvicorn's keep-alive timeout).
    http_keep_alive_s: int = 5
    # Open HTTP connections per address, per worker (addresses in `trusted_ips` are exempt).
    http_max_connections_per_ip: int = 100
    # How long a gift `id` is remembered for idempotent retries.
    idempotency_ttl_s: int = 24 * 3600
    # A gift's stored answer stays in Valkey at least this long (then, once archived, it is
    # answered from PostgreSQL); the bits per generation of each user's filter of request ids.
    idempotency_hot_s: int = 300
    idempotency_filter_bits: int = 65536
    # Room history kept for `join` with `since` (approximate, in events).
    room_history_max: int = 100_000
    # An ended room's history (its event stream) is deleted this long after the end, unless the
    # room goes live again; members may replay it with `since` meanwhile. 0 keeps it for ever.
    room_history_ttl_s: int = 24 * 3600
    # The relay re-applies credits whose debit is older than `relay_grace_ms`.
    relay_interval_s: float = 1.0
    relay_grace_ms: int = 2000
    # At shutdown each background part of a worker (relay, hub, store clients) gets this long
    # to stop; then it is cancelled again and finally abandoned with a log line.
    shutdown_timeout_s: float = 5.0
    # The gift path's commands are pipelined: at most this many pipelines in flight per worker
    # (more commands wait and go together in the next), of at most this many commands each.
    pipeline_max_in_flight: int = 4
    pipeline_max_commands: int = 512
    # Settling a credited gift's outbox entry waits this long to ride with another pipeline.
    settle_linger_ms: int = 50
    # AOF fsync policy of the embedded Valkey: always | everysec | no.
    aof_fsync: AofFsync = "everysec"
    # Most coins a dev user may be created with.
    dev_max_coins: int = 100_000_000
    # The gift catalog file; unset: the bundled data/gifts.toml.
    catalog_path: Path | None = None
    # Prices, regions, promotions, cash-out and rewards; unset: the bundled data/economy.toml.
    economy_path: Path | None = None
    # The ledger of record (PostgreSQL). Unset: an embedded PostgreSQL in `data_dir`/postgres.
    database_url: str | None = None
    # The archiver copies new ledger entries and room events to PostgreSQL every this often, at
    # most this many rows per transaction, and looks for new streams every scan interval.
    archive_interval_s: float = 1.0
    archive_batch_rows: int = 8000
    archive_scan_interval_s: float = 5.0
    # The active archiver's lease in Valkey: another worker takes over once it lapses.
    archive_lease_ms: int = 5000
    # Longest wait between the archiver's retries while PostgreSQL is unreachable (below the
    # lease, which it renews between retries).
    archive_backoff_max_s: float = 2.0
    # Archived ledger entries stay in Valkey this long before they are trimmed (a margin for
    # tools that read the recent ledger there, such as the admin API's ledger tail).
    archive_keep_s: float = 30.0
    # Room events kept beyond `room_history_max` while the archiver has not copied them to
    # PostgreSQL (per room, approximate): the backlog Valkey buffers while PostgreSQL is down;
    # past it the oldest go unarchived.
    room_history_backlog: int = 100_000
    # Entries per page of GET /v1/history: the default, and the most a client may ask for.
    history_page_size: int = 50
    history_page_max: int = 200
    # Testing only: named faults to inject: "crash_after_debit", "lose_debit_reply",
    # "crash_after_credit".
    faults: frozenset[Fault] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """The settings of `environ` (default: the process's environment) and `overrides` (the
        CLI's flags; None: not given). Raises SettingsError naming the first wrong variable: one
        that names no setting, or a value its setting does not accept."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        names = {ENV_PREFIX + f.name.upper(): f.name for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in names)
        if unknown:
            raise SettingsError(
                f"{unknown[0]} is not a setting; the settings are the GIFTSTREAM_* variables"
                " of README.md's configuration table"
            )
        values: dict[str, Any] = {}
        for variable, name in names.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            values[name] = _parse(raw, hints[name], name, variable)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _check(value, hints[name], name, "--" + name.replace("_", "-"))
        return replace(cls(), **values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a worker process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, frozenset):
                value = ",".join(sorted(value)) or "none"
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env


class SettingsError(ValueError):
    """A setting given a value it does not take, or a GIFTSTREAM_* variable that is no setting."""


# Numbers may not be negative; these may not be zero either (zero would stop what they time,
# divide by zero or accept nothing). Every other number takes 0 (e.g. relay_grace_ms: at once).
POSITIVE = frozenset(
    {
        "port",
        "workers",
        "token_ttl_s",
        "max_frame_bytes",
        "send_queue_bytes",
        "socket_send_buffer_bytes",
        "slow_reader_timeout_s",
        "streak_timeout_ms",
        "coalesce_tick_ms",
        "presence_ttl_s",
        "gift_rate_per_s",
        "gift_burst",
        "max_connections_per_user",
        "max_connections_per_ip",
        "connection_attempts_per_ip_per_s",
        "max_rooms_per_connection",
        "auth_timeout_s",
        "ws_ping_interval_s",
        "ws_ping_timeout_s",
        "max_body_bytes",
        "http_header_timeout_s",
        "http_body_timeout_s",
        "http_max_header_bytes",
        "http_keep_alive_s",
        "http_max_connections_per_ip",
        "idempotency_ttl_s",
        "idempotency_filter_bits",
        "shutdown_timeout_s",
        "room_history_max",
        "relay_interval_s",
        "pipeline_max_in_flight",
        "pipeline_max_commands",
        "archive_interval_s",
        "archive_batch_rows",
        "archive_scan_interval_s",
        "archive_lease_ms",
        "archive_backoff_max_s",
        "history_page_size",
        "history_page_max",
        "battle_duration_s",
        "battle_min_duration_s",
        "battle_max_duration_s",
        "battle_invite_ttl_s",
        "battle_keep_s",
        "battle_invites_per_min",
        "battle_invite_burst",
    }
)
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
INTEGER = re.compile(r"[+-]?[0-9]+")


def _parse(raw: str, kind: Any, name: str, where: str) -> Any:
    """The value of one variable, as its field's type says."""
    kind = _without_none(kind)
    text = raw.strip()
    if kind is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise SettingsError(f"{where} must be a boolean ({', '.join(TRUE + FALSE)}), not {raw!r}")
    if kind is int:
        if INTEGER.fullmatch(text) is None:
            raise SettingsError(f"{where} must be a whole number, not {raw!r}")
        return _check(int(text), kind, name, where)
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise SettingsError(f"{where} must be a number, not {raw!r}")
        return _check(number, kind, name, where)
    if kind is Path:
        return Path(raw)
    if get_origin(kind) is frozenset:
        items = [] if text.lower() == "none" else [p.strip() for p in raw.split(",")]
        return _check(frozenset(p for p in items if p), kind, name, where)
    if kind is str or get_origin(kind) is Literal:
        return _check(raw, kind, name, where)
    raise TypeError(f"setting {name}: no parser for {kind}")  # a field of a new type: add one


def _check(value: Any, kind: Any, name: str, where: str) -> Any:
    """`value` if its field takes it (a number in range, a listed choice)."""
    kind = _without_none(kind)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name in POSITIVE and value <= 0:
            raise SettingsError(f"{where} must be greater than 0, not {value}")
        if value < 0:
            raise SettingsError(f"{where} must not be negative, not {value}")
    if get_origin(kind) is frozenset:
        (item,) = get_args(kind)
        for each in sorted(value):
            _check(each, item, name, where)
    if get_origin(kind) is Literal and value not in get_args(kind):
        choices = ", ".join(str(c) for c in get_args(kind))
        raise SettingsError(f"{where} must be one of {choices}, not {value!r}")
    return value


def _without_none(kind: Any) -> Any:
    """`X` of `X | None`."""
    if get_origin(kind) in (Union, types.UnionType):
        (kind,) = (a for a in get_args(kind) if a is not type(None))
    return kind
