"""What a run reports (the JSON file, the summary table and the plot are made from these)."""

from dataclasses import dataclass, field

from loadtest.tally import Latency


@dataclass
class ServerUsage:
    """The server's processes (the store apart). RSS before the load connected, once it had
    connected, at its peak and at the end of the window (connections still open); CPU time in
    the window, as cores (CPU seconds per second) and per gift acknowledged."""

    before_bytes: int
    ready_bytes: int
    peak_bytes: int
    end_bytes: int
    per_connection_bytes: float | None
    store_bytes: int
    cpu_cores: float
    store_cpu_cores: float
    cpu_us_per_gift: float | None
    store_cpu_us_per_gift: float | None
    pids: list[int]
    # The gift path's pipelines (round trips) and commands to the store, per gift acknowledged,
    # from the server's counters.
    redis_round_trips_per_gift: float | None = None
    redis_commands_per_gift: float | None = None


@dataclass
class CoinCheck:
    """From the outside: each user's wallet against what the generator saw acknowledged."""

    users: int
    coins_expected: int
    coins_found: int
    # Coins of requests that got no answer: charged or not, either is allowed.
    coins_uncertain: int
    coins_missing: int
    problems: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    label: str
    scenario: str
    server: str  # "giftstream", "bare echo", "bare broadcast"
    processes: int
    connections: int
    senders: int
    # Gifts (or requests) per second asked for, open loop; None: as fast as answers come.
    target_rate: float | None
    window_s: float
    gifts_sent: int = 0
    gifts_acked: int = 0
    gifts_per_s: float = 0.0
    gifts_backlogged: int = 0
    ack_latency: Latency | None = None
    host_credit_latency: Latency | None = None
    frames_delivered_per_s: float = 0.0
    frames_per_viewer_per_s: float = 0.0
    # Room frames received / (gifts acked x room members): below 1 when lossy frames were dropped.
    delivery_ratio: float | None = None
    requests_per_s: float | None = None
    http_latency: dict[str, Latency] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    usage: ServerUsage | None = None
    # CPU of the load generator itself, in cores: near its process count, it is the limit.
    generator_cpu_cores: float = 0.0
    coin_check: CoinCheck | None = None
    # `chaos`: the books after the faults (acked vs ledgers vs credits), and the faults.
    books: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)


@dataclass
class Machine:
    cpu: str
    cores: int
    memory_gib: float
    python: str
    kernel: str
    load_average_at_start: tuple[float, float, float]


@dataclass
class Report:
    command: str
    started_at: str
    machine: Machine
    target: str
    runs: list[RunResult] = field(default_factory=list)
    # Our figures over the bare servers' (bench only).
    ratios: dict[str, float] = field(default_factory=dict)
    audit_clean: bool | None = None
    audit_output: str = ""
    ok: bool = False
    failures: list[str] = field(default_factory=list)
