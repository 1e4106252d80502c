"""The scenarios: who connects where, how they gift, and what is checked after.

- `storm`: one room, 1 host, many viewers, N senders tapping 1-coin gifts, open loop at a target
  rate or as fast as their answers come.
- `rooms`: many small rooms, everyone in them gifting slowly (open loop).
- `idle`: many connections that auth, join and stay quiet: the server's memory per connection.
- `recharge`: users buying coins over HTTP (see loadtest.recharge).
- `bench`: `storm` as fast as possible and at half that rate, with the bare `echo` and
  `broadcast` servers measured in the same run through the same generator, as ratios.
- `sweep`: `storm` at fractions of its maximum rate, for the throughput-latency plot.
- `battle`: two rooms in a LIVE battle, viewers in each and senders gifting in both; the
  battle's final scores must equal the coins the generator saw acked in each room.

Every run creates its users (POST /v1/dev/users, with coins), checks their wallets against
what the generator saw acknowledged, and the invocation ends with `giftstream audit`.

One module (~430 lines): the scenarios share their worlds, drive and checks.
"""

import asyncio
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadtest.http import HttpPool
from loadtest.procs import Plan, Processes, Tick
from loadtest.recharge import Buyer, RechargePlan
from loadtest.results import CoinCheck, RunResult, ServerUsage
from loadtest.tally import Tally, latency
from loadtest.target import Target, Usage
from loadtest.wsload import ConnPlan, WsPlan

FUND_COINS = 10_000_000
SETUP_CONNECTIONS = 16
REGION = "US"


FRACTIONS = (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 1.1)


@dataclass(frozen=True)
class Options:
    procs: int
    duration_s: float
    drain_s: float
    # Gifts (or requests) per second in all; 0: as fast as answers come.
    rate: float
    window: int
    senders: int
    viewers: int
    rooms: int
    conns: int
    users: int
    clients: int
    gift: str
    fractions: tuple[float, ...]
    # `soak`: gifts to send after the warm-up, in runs of `duration_s` each.
    gifts: int = 0


@dataclass
class World:
    """The users and rooms made for an invocation, and what their wallets should hold."""

    conns: list[ConnPlan] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    expected: Counter[str] = field(default_factory=Counter)
    uncertain: Counter[str] = field(default_factory=Counter)
    gift_coins: int = 1


# -- set-up ------------------------------------------------------------------------------------


async def make_users(
    pool: HttpPool, n: int, name: str, role: str = "viewer", coins: int = 0
) -> list[tuple[str, str]]:
    """(user, token) of `n` new dev users."""

    async def one(i: int) -> tuple[str, str]:
        body = {"name": f"{name}-{i}", "region": REGION, "role": role, "coins": coins}
        answer = await pool.ok("POST", "/v1/dev/users", body)
        return str(answer["user"]), str(answer["token"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def gift_coins(pool: HttpPool, gift: str) -> int:
    for entry in await pool.ok("GET", "/v1/gifts"):
        if entry["id"] == gift:
            return int(entry["coins"])
    raise ValueError(f"the server's catalog has no gift '{gift}'")


async def room_world(
    pool: HttpPool, rooms: int, viewers: int, senders: int, gift: str, world: World | None = None
) -> World:
    """`rooms` live rooms, each with its host, `viewers` quiet viewers and `senders` funded
    senders, all to be connected and joined."""
    world = world or World()
    world.gift_coins = await gift_coins(pool, gift)
    hosts = await make_users(pool, rooms, "lt-host", role="host")
    room_ids = await asyncio.gather(
        *(pool.ok("POST", "/v1/rooms", {}, token) for _, token in hosts)
    )
    quiet = await make_users(pool, rooms * viewers, "lt-viewer")
    funded = await make_users(pool, rooms * senders, "lt-sender", coins=FUND_COINS)
    for r, ((host, host_token), opened) in enumerate(zip(hosts, room_ids, strict=True)):
        room = str(opened["room"])
        world.conns.append(ConnPlan("host", room, host, host_token))
        for user, token in quiet[r * viewers : (r + 1) * viewers]:
            world.conns.append(ConnPlan("viewer", room, user, token))
        for user, token in funded[r * senders : (r + 1) * senders]:
            world.conns.append(ConnPlan("sender", room, user, token))
            world.tokens[user] = token
            world.expected[user] = FUND_COINS
    return world


@dataclass
class BattleCheck:
    """The battle's final score of each room against the coins acked in it."""

    scores: dict[str, int]
    acked: dict[str, int]
    # Coins of gifts without an answer: scored or not, either is allowed.
    uncertain: dict[str, int]

    def problems(self) -> list[str]:
        return [
            f"room {room}: scored {score}, acked {self.acked[room]}"
            f" (+{self.uncertain[room]} unanswered)"
            for room, score in self.scores.items()
            if not self.acked[room] <= score <= self.acked[room] + self.uncertain[room]
        ]


async def start_battle(pool: HttpPool, world: World, duration_s: int) -> str:
    """A battle between the world's rooms, invited by the first host, accepted by the others."""
    hosts = [c for c in world.conns if c.role == "host"]
    first, others = hosts[0], hosts[1:]
    body = {"rooms": [h.room for h in others], "duration_s": duration_s}
    battle = str((await pool.ok("POST", "/v1/battles", body, first.token))["battle"])
    for host in others:
        await pool.ok("POST", f"/v1/battles/{battle}/accept", {}, host.token)
    return battle


async def end_battle(pool: HttpPool, world: World, battle: str, tally: Tally) -> BattleCheck:
    """End the battle (early, by its inviter) and check its scores against the acked coins."""
    hosts = [c for c in world.conns if c.role == "host"]
    result = await pool.ok("POST", f"/v1/battles/{battle}/end", {}, hosts[0].token)
    acked: Counter[str] = Counter()
    uncertain: Counter[str] = Counter()
    for conn in world.conns:
        if conn.role == "sender":
            acked[conn.room] += tally.spent[conn.user]
            uncertain[conn.room] += tally.uncertain[conn.user]
    return BattleCheck(
        scores={str(side["room"]): int(side["score"]) for side in result["sides"]},
        acked={h.room: acked[h.room] for h in hosts},
        uncertain={h.room: uncertain[h.room] for h in hosts},
    )


async def idle_world(pool: HttpPool, conns: int, users: int, rooms: int) -> World:
    """`conns` viewers spread over `rooms` rooms, sharing `users` users (what is measured is the
    connection; the server limits connections per user, so do not share too much)."""
    world = World()
    hosts = await make_users(pool, rooms, "lt-host", role="host")
    opened = await asyncio.gather(*(pool.ok("POST", "/v1/rooms", {}, t) for _, t in hosts))
    viewers = await make_users(pool, max(1, min(users, conns)), "lt-idle")
    for i in range(conns):
        user, token = viewers[i % len(viewers)]
        world.conns.append(ConnPlan("viewer", str(opened[i % rooms]["room"]), user, token))
    return world


def bare_conns(conns: Sequence[ConnPlan], roles: tuple[str, ...]) -> list[ConnPlan]:
    """The same connections for a bare server: same rooms (paths), no users."""
    return [ConnPlan(c.role, c.room) for c in conns if c.role in roles]


def split(conns: Sequence[ConnPlan], procs: int) -> list[list[ConnPlan]]:
    """Deal the connections to the processes, each role in turn, so each gets its share."""
    parts: list[list[ConnPlan]] = [[] for _ in range(procs)]
    dealt: Counter[str] = Counter()
    for conn in conns:
        parts[dealt[conn.role] % procs].append(conn)
        dealt[conn.role] += 1
    return [p for p in parts if p]


# The server's counters of the gift path's round trips and commands to the store.
REDIS_COUNTERS = ("giftstream_redis_round_trips_total", "giftstream_redis_commands_total")


# -- running -----------------------------------------------------------------------------------


async def drive(
    plans: Sequence[Plan], target: Target, tick: Tick, credits: bool = False
) -> tuple[Tally, ServerUsage | None]:
    """Run the plans' processes through their phases; the server's memory and CPU meanwhile."""
    before = target.usage()
    first = not target.loaded
    target.loaded = True
    window_s = max(plan.duration_s for plan in plans)
    peak = 0
    at_end: list[tuple[float, Usage]] = []

    def sample(elapsed_s: float) -> None:
        nonlocal peak
        now = target.usage()
        if now is not None:
            peak = max(peak, now.server_bytes)
            if not at_end and elapsed_s >= window_s:
                at_end.append((elapsed_s, now))

    processes = Processes(list(plans), tick)
    try:
        await processes.connect()
        ready = target.usage()
        ready_counts = target.counters(REDIS_COUNTERS)
        await processes.load(sample)
        end = target.usage()
        end_counts = target.counters(REDIS_COUNTERS)
        tally = await processes.results(credits)
    finally:
        processes.stop()
    if before is None or ready is None or end is None:
        return tally, None
    span, window_end = at_end[0] if at_end else (processes.elapsed_s, end)
    gifts = tally.counts["gifts_acked"] or tally.counts["requests_answered"]
    # Cores: over the window. Per gift: up to the end of the drain, when every gift is done.
    cpu = end.server_cpu_s - ready.server_cpu_s
    store_cpu = end.store_cpu_s - ready.store_cpu_s
    grown = end.server_bytes - before.server_bytes
    return tally, ServerUsage(
        before_bytes=before.server_bytes,
        ready_bytes=ready.server_bytes,
        peak_bytes=max(peak, end.server_bytes),
        end_bytes=end.server_bytes,
        per_connection_bytes=round(grown / tally.connections, 1)
        if tally.connections and first
        else None,
        store_bytes=end.store_bytes,
        cpu_cores=round((window_end.server_cpu_s - ready.server_cpu_s) / span, 3),
        store_cpu_cores=round((window_end.store_cpu_s - ready.store_cpu_s) / span, 3),
        cpu_us_per_gift=round(cpu / gifts * 1e6, 1) if gifts else None,
        store_cpu_us_per_gift=round(store_cpu / gifts * 1e6, 1) if gifts else None,
        pids=list(end.pids),
        redis_round_trips_per_gift=_per(ready_counts, end_counts, REDIS_COUNTERS[0], gifts),
        redis_commands_per_gift=_per(ready_counts, end_counts, REDIS_COUNTERS[1], gifts),
    )


def _per(
    before: dict[str, float] | None, after: dict[str, float] | None, name: str, gifts: int
) -> float | None:
    if not before or not after or name not in after or not gifts:
        return None
    return round((after[name] - before.get(name, 0.0)) / gifts, 3)


async def run_ws(
    label: str,
    scenario: str,
    mode: str,
    target: Target,
    conns: Sequence[ConnPlan],
    opts: Options,
    rate: float,
    gift_coins: int,
    tick: Tick,
) -> tuple[RunResult, Tally]:
    run_tag = secrets.token_hex(4)
    parts = split(conns, opts.procs)
    senders = sum(c.role == "sender" for c in conns)
    plans = [
        WsPlan(
            index=i,
            host=target.host,
            port=target.port,
            mode=mode,
            conns=tuple(part),
            duration_s=opts.duration_s,
            rate=rate * sum(c.role == "sender" for c in part) / senders if senders else 0.0,
            window=opts.window,
            gift=opts.gift,
            gift_coins=gift_coins,
            run_tag=run_tag,
            drain_s=opts.drain_s,
        )
        for i, part in enumerate(parts)
    ]
    hosts = mode == "service" and any(c.role == "host" for c in conns)
    tally, usage = await drive(plans, target, tick, credits=hosts)
    server = {"service": "giftstream", "echo": "bare echo", "broadcast": "bare broadcast"}[mode]
    rooms = len({c.room for c in conns})
    result = ws_result(label, scenario, server, tally, senders, rooms, rate, usage)
    return result, tally


def ws_result(
    label: str,
    scenario: str,
    server: str,
    tally: Tally,
    senders: int,
    rooms: int,
    rate: float,
    usage: ServerUsage | None,
) -> RunResult:
    window = tally.window_s
    acked = tally.counts["gifts_acked_in_window"]
    frames = tally.counts["frames_delivered"]
    gifts = tally.counts["gift_frames_delivered"]
    errors = Counter(tally.errors)
    if tally.sent_at and server == "giftstream":
        missing = len(tally.sent_at.keys() - tally.credited_at.keys())
        if missing:
            errors["credit_missing"] += missing
    members = tally.members
    return RunResult(
        label=label,
        scenario=scenario,
        server=server,
        processes=tally.processes,
        connections=tally.connections,
        senders=senders,
        target_rate=rate or None,
        window_s=round(window, 3),
        gifts_sent=tally.counts["gifts_sent"],
        gifts_acked=tally.counts["gifts_acked"],
        gifts_per_s=round(tally.per_s("gifts_acked_in_window"), 1),
        gifts_backlogged=tally.counts["gifts_backlogged"],
        ack_latency=latency(tally.latencies.get("ack", ())),
        host_credit_latency=latency(tally.credit_latencies()),
        frames_delivered_per_s=round(tally.per_s("frames_delivered"), 1),
        frames_per_viewer_per_s=round(frames / window / members, 2) if window and members else 0.0,
        # Rooms of the same size, each with its share of the gifts: a member sees its room's,
        # at most one gift frame each (fewer when merged); a streak's closing frame is no gift.
        delivery_ratio=round(gifts * rooms / (acked * members), 3) if acked and members else None,
        errors=dict(errors),
        usage=usage,
        generator_cpu_cores=round(tally.cpu_s / window, 3) if window else 0.0,
    )


async def check_coins(pool: HttpPool, world: World, tally: Tally) -> CoinCheck:
    """Each funded user's wallet against what the generator saw: coins acknowledged as spent,
    coins credited by purchases; a request without an answer may have gone either way."""
    world.expected.subtract(tally.spent)
    world.expected.update(tally.bought)
    world.uncertain.update(tally.uncertain)
    users = sorted(world.tokens)

    async def coins_of(user: str) -> int:
        return int((await pool.ok("GET", "/v1/wallet", None, world.tokens[user]))["coins"])

    found = await asyncio.gather(*(coins_of(u) for u in users))
    check = CoinCheck(
        users=len(users),
        coins_expected=sum(world.expected[u] for u in users),
        coins_found=sum(found),
        coins_uncertain=sum(world.uncertain[u] for u in users),
        coins_missing=0,
    )
    for user, coins in zip(users, found, strict=True):
        high = world.expected[user]
        low = high - world.uncertain[user]
        if low <= coins <= high:
            continue
        off = low - coins if coins < low else coins - high
        check.coins_missing += off
        check.problems.append(f"{user}: holds {coins}, expected {low}..{high}")
    return check


async def run_recharge(
    label: str, target: Target, pool: HttpPool, opts: Options, world: World, tick: Tick
) -> tuple[RunResult, Tally]:
    packages = await pool.ok("GET", f"/v1/packages?region={REGION}&channel=web")
    package_ids = tuple(str(p["id"]) for p in packages)
    buyers = [Buyer(u, t) for u, t in await make_users(pool, opts.clients, "lt-buyer")]
    for buyer in buyers:
        world.tokens[buyer.user] = buyer.token
        world.expected[buyer.user] = 0
    procs = max(1, min(opts.procs, len(buyers)))
    run_tag = secrets.token_hex(4)
    plans = [
        RechargePlan(
            index=i,
            url=target.url,
            buyers=tuple(buyers[i::procs]),
            packages=package_ids,
            duration_s=opts.duration_s,
            rate=opts.rate * len(buyers[i::procs]) / len(buyers),
            run_tag=run_tag,
        )
        for i in range(procs)
    ]
    tally, usage = await drive(plans, target, tick)
    http = {
        name.removeprefix("http:"): lat
        for name, samples in sorted(tally.latencies.items())
        if (lat := latency(samples)) is not None
    }
    result = RunResult(
        label=label,
        scenario="recharge",
        server="giftstream",
        processes=tally.processes,
        connections=tally.connections,
        senders=len(buyers),
        target_rate=opts.rate or None,
        window_s=round(tally.window_s, 3),
        requests_per_s=round(tally.per_s("requests_answered_in_window"), 1),
        http_latency=http,
        outcomes={
            k.removeprefix("outcome:"): v
            for k, v in sorted(tally.counts.items())
            if k.startswith("outcome:")
        },
        errors=dict(tally.errors),
        usage=usage,
        generator_cpu_cores=round(tally.cpu_s / tally.window_s, 3) if tally.window_s else 0.0,
    )
    return result, tally
