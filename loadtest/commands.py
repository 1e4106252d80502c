"""One function per command of `python -m loadtest`: set up, run, check, and fill the report.

One module (~390 lines): the commands side by side, each short.
"""

import argparse
import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from loadtest.chaos import CHAOS_SETTINGS, Faults, inflict, read_books
from loadtest.http import HttpPool
from loadtest.profile import Profile
from loadtest.report import Display, cpu_us_per_frame
from loadtest.results import Report, RunResult
from loadtest.scenarios import (
    SETUP_CONNECTIONS,
    Options,
    World,
    bare_conns,
    check_coins,
    end_battle,
    idle_world,
    room_world,
    run_recharge,
    run_ws,
    start_battle,
)
from loadtest.target import Target, baseline_server, external, giftstream_service
from loadtest.wsload import ConnPlan

Body = Callable[[Target, HttpPool], Awaitable[None]]
# How long the chaos books wait for the relay to credit a killed worker's gifts.
BOOKS_SETTLE_S = 30.0
RATIO_ECHO = "storm gifts acked/s ÷ bare echo round trips/s"
RATIO_BROADCAST = "storm frames delivered/s ÷ bare broadcast frames delivered/s"
RATIO_ECHO_CPU = "bare echo server CPU per round trip ÷ storm server CPU per gift"
RATIO_BROADCAST_CPU = "bare broadcast server CPU per frame ÷ storm server CPU per frame"
RATIO_ALONE = "no-viewers gifts acked/s ÷ bare echo round trips/s"
RATIO_ALONE_CPU = "bare echo server CPU per round trip ÷ no-viewers server CPU per gift"
# `soak`: Valkey's memory and the archive, read from the service's /metrics after each run.
SOAK_METRICS = (
    "giftstream_valkey_used_memory_bytes",
    "giftstream_archive_lag_entries",
    "giftstream_archive_lag_seconds",
)
SOAK_WARM = "soak: Valkey used_memory after the warm-up (bytes)"
SOAK_END = "soak: Valkey used_memory at the end (bytes)"
SOAK_PER_GIFT = "soak: Valkey bytes per gift after the warm-up"
SOAK_CHANGE = "soak: used_memory end ÷ after the warm-up"
SOAK_LAG_S = "soak: largest archive lag seen after a run (s)"
SOAK_GIFTS = "soak: gifts after the warm-up"
SOAK_RATE = "soak: gifts/s after the warm-up"


def bench_ratios(
    echo: RunResult, broadcast: RunResult, storm: RunResult, alone: RunResult
) -> dict[str, float]:
    """Throughput over the bare servers' (what the targets ask), and the same in server CPU per
    answer or frame — steadier on a machine whose other load changes during the run."""
    ratios = {}
    if echo.gifts_per_s:
        ratios[RATIO_ECHO] = storm.gifts_per_s / echo.gifts_per_s
        ratios[RATIO_ALONE] = alone.gifts_per_s / echo.gifts_per_s
    if broadcast.frames_delivered_per_s:
        ratios[RATIO_BROADCAST] = storm.frames_delivered_per_s / broadcast.frames_delivered_per_s
    bare = echo.usage.cpu_us_per_gift if echo.usage else None
    for name, run in ((RATIO_ECHO_CPU, storm), (RATIO_ALONE_CPU, alone)):
        ours = run.usage.cpu_us_per_gift if run.usage else None
        if bare and ours:
            ratios[name] = bare / ours
    ours, bare = cpu_us_per_frame(storm), cpu_us_per_frame(broadcast)
    if ours and bare:
        ratios[RATIO_BROADCAST_CPU] = bare / ours
    return ratios


@contextmanager
def service(args: argparse.Namespace, chaos: bool = False) -> Iterator[Target]:
    """The giftstream under load: at --url, or started here (for `chaos`, with two workers at
    least, on a store of its own)."""
    if args.url:
        audit_args = None
        if args.redis_url:
            audit_args = ["--redis-url", args.redis_url]
        elif args.data_dir:
            audit_args = ["--data-dir", args.data_dir]
        if audit_args is not None and args.database_url:
            audit_args += ["--database-url", args.database_url]
        yield external(args.url, None if args.no_audit else audit_args, args.server_pid)
        return
    # A benchmark measures the service, not its per-user limits (a storm has few senders):
    # they are lifted unless --server-env sets them.
    settings = {
        **BENCH_LIMITS,
        **(CHAOS_SETTINGS if chaos else {}),
        **dict(item.split("=", 1) for item in args.server_env),
    }
    workers = max(args.workers, 2) if chaos else args.workers
    with giftstream_service(workers, settings, args.keep, own_store=chaos) as target:
        if args.no_audit:
            target.audit_args = None
        yield target


# Longer than any run: the battle is ended by the run, once every answer is in.
BATTLE_DURATION_S = 3600

BENCH_LIMITS = {
    "GIFTSTREAM_GIFT_RATE_PER_S": "1000000",
    "GIFTSTREAM_GIFT_BURST": "1000000",
    "GIFTSTREAM_MAX_CONNECTIONS_PER_USER": "1000000",
}


class Command:
    def __init__(self, args: argparse.Namespace, opts: Options, display: Display, report: Report):
        self.args = args
        self.opts = opts
        self.display = display
        self.report = report

    async def on_service(self, body: Body, chaos: bool = False) -> None:
        """Run `body` against the service, then audit its store whatever happened."""
        with service(self.args, chaos) as target:
            self.report.target = target.description
            pool = HttpPool(target.url, SETUP_CONNECTIONS)
            try:
                await body(target, pool)
            finally:
                await pool.aclose()
                self.display.note("giftstream audit …")
                try:
                    audit = target.audit()
                except subprocess.TimeoutExpired:
                    self.report.failures.append("giftstream audit did not finish in time")
                    audit = None
                if audit is not None:
                    self.report.audit_clean = audit.clean
                    self.report.audit_output = audit.output
                    if not audit.clean:
                        self.report.failures.append("giftstream audit found coins unaccounted")
            for note in target.notes:
                self.display.note(note)

    async def gifting(
        self, label: str, scenario: str, target: Target, pool: HttpPool, world: World, rate: float
    ) -> RunResult:
        tick = self.display.tick(label)
        profile = None
        if self.args.profile is not None:
            pids = target.worker_pids() or ([target.root_pid] if target.root_pid else [])
            profile = Profile(self.args.profile, label, pids, target.store_url)
            tick = profile.around_load(tick)
        try:
            with self.display.live():
                result, tally = await run_ws(
                    label,
                    scenario,
                    "service",
                    target,
                    world.conns,
                    self.opts,
                    rate,
                    world.gift_coins,
                    tick,
                )
        finally:
            if profile is not None:
                profile.stop()
                for path in profile.written:
                    self.display.note(f"profile: {path}")
        result.coin_check = await check_coins(pool, world, tally)
        self._check(result)
        self.report.runs.append(result)
        return result

    def _check(self, result: RunResult) -> None:
        refused = sum(n for code, n in result.errors.items() if code.startswith("connect:"))
        if refused:
            self.report.failures.append(
                f"{result.label}: {refused:,} of {result.connections + refused:,} connections"
                " could not connect and join"
            )
        check = result.coin_check
        if check is not None and check.coins_missing:
            self.report.failures.append(
                f"{result.label}: {check.coins_missing} coins missing from the wallets: "
                + "; ".join(check.problems[:5])
            )

    async def baseline(self, kind: str, conns: list[ConnPlan]) -> RunResult:
        label = f"bare {kind}"
        self.display.note(f"{label}: {len(conns):,} connections …")
        with baseline_server(kind) as target, self.display.live():
            result, _ = await run_ws(
                label, "bench", kind, target, conns, self.opts, 0.0, 1, self.display.tick(label)
            )
        self._check(result)
        self.report.runs.append(result)
        return result

    # -- the commands ----------------------------------------------------------------------

    async def storm(self) -> None:
        async def body(target: Target, pool: HttpPool) -> None:
            world = await self._storm_world(pool)
            await self.gifting("storm", "storm", target, pool, world, self.opts.rate)

        await self.on_service(body)

    async def battle(self) -> None:
        """Two rooms in a LIVE battle, gifts to both: each side's final score must equal the
        coins acked in its room, to the coin."""
        opts = self.opts

        async def body(target: Target, pool: HttpPool) -> None:
            self.display.note(
                f"battle: 2 rooms x {opts.viewers:,} viewers, {opts.senders} senders each …"
            )
            world = await room_world(pool, 2, opts.viewers, opts.senders, opts.gift)
            battle = await start_battle(pool, world, BATTLE_DURATION_S)
            with self.display.live():
                result, tally = await run_ws(
                    "battle",
                    "battle",
                    "service",
                    target,
                    world.conns,
                    opts,
                    opts.rate,
                    world.gift_coins,
                    self.display.tick("battle"),
                )
            result.coin_check = await check_coins(pool, world, tally)
            check = await end_battle(pool, world, battle, tally)
            for n, (room, score) in enumerate(sorted(check.scores.items()), 1):
                self.report.ratios[f"battle: room {n} score (coins)"] = float(score)
                self.report.ratios[f"battle: room {n} coins acked"] = float(check.acked[room])
            problems = check.problems()
            if problems:
                self.report.failures.append("battle: scores off: " + "; ".join(problems))
            self._check(result)
            self.report.runs.append(result)

        await self.on_service(body)

    async def rooms(self) -> None:
        opts = self.opts

        async def body(target: Target, pool: HttpPool) -> None:
            self.display.note(f"rooms: {opts.rooms} rooms x {opts.viewers} viewers, all gifting …")
            world = await room_world(pool, opts.rooms, 0, opts.viewers, opts.gift)
            await self.gifting("rooms", "rooms", target, pool, world, opts.rate)

        await self.on_service(body)

    async def idle(self) -> None:
        opts = self.opts

        async def body(target: Target, pool: HttpPool) -> None:
            self.display.note(f"idle: {opts.conns:,} connections in {opts.rooms} rooms …")
            world = await idle_world(pool, opts.conns, opts.users, opts.rooms)
            with self.display.live():
                result, _ = await run_ws(
                    "idle",
                    "idle",
                    "service",
                    target,
                    world.conns,
                    opts,
                    0.0,
                    1,
                    self.display.tick("idle"),
                )
            self._check(result)
            self.report.runs.append(result)

        await self.on_service(body)

    async def recharge(self) -> None:
        async def body(target: Target, pool: HttpPool) -> None:
            self.display.note(f"recharge: {self.opts.clients} buyers …")
            world = World()
            with self.display.live():
                result, tally = await run_recharge(
                    "recharge", target, pool, self.opts, world, self.display.tick("recharge")
                )
            result.coin_check = await check_coins(pool, world, tally)
            self._check(result)
            self.report.runs.append(result)

        await self.on_service(body)

    async def bench(self) -> None:
        """`storm` as fast as it goes and at half that, with the bare servers beside it."""
        opts = self.opts
        shape = [ConnPlan("host", "room")]
        shape += [ConnPlan("viewer", "room")] * opts.viewers
        shape += [ConnPlan("sender", "room")] * opts.senders
        echo = await self.baseline("echo", bare_conns(shape, ("sender",)))
        broadcast = await self.baseline(
            "broadcast", bare_conns(shape, ("host", "viewer", "sender"))
        )

        async def body(target: Target, pool: HttpPool) -> None:
            world = await self._storm_world(pool)
            top = await self.gifting("storm max", "storm", target, pool, world, 0.0)
            half = top.gifts_per_s / 2
            if half > 0:
                await self.gifting("storm ½ max", "storm", target, pool, world, half)
            # The gift path alone: the same senders in a room of their own, without viewers.
            alone = await room_world(pool, 1, 0, opts.senders, opts.gift)
            path = await self.gifting("no viewers", "storm", target, pool, alone, 0.0)
            self.report.ratios.update(bench_ratios(echo, broadcast, top, path))

        await self.on_service(body)

    async def soak(self) -> None:
        """`storm` for a warm-up run, then runs until `gifts` more are acked: Valkey's
        used_memory after the warm-up and at the end, the archive lag, the gifts/s."""
        opts = self.opts

        async def body(target: Target, pool: HttpPool) -> None:
            world = await self._storm_world(pool)
            await self.gifting("soak warm-up", "storm", target, pool, world, opts.rate)
            warm = target.counters(SOAK_METRICS) or {}
            gifts, seconds, lag, n = 0, 0.0, 0.0, 0
            while gifts < opts.gifts:
                n += 1
                run = await self.gifting(f"soak {n}", "storm", target, pool, world, opts.rate)
                if not run.gifts_acked:
                    break
                gifts += run.gifts_acked
                seconds += run.gifts_acked / run.gifts_per_s if run.gifts_per_s else 0.0
                lag = max(lag, (target.counters(SOAK_METRICS) or {}).get(SOAK_METRICS[2], 0.0))
            end = target.counters(SOAK_METRICS) or {}
            before, after = warm.get(SOAK_METRICS[0]), end.get(SOAK_METRICS[0])
            figures = {SOAK_GIFTS: float(gifts), SOAK_LAG_S: lag}
            if seconds:
                figures[SOAK_RATE] = gifts / seconds
            if before and after:
                figures |= {SOAK_WARM: before, SOAK_END: after, SOAK_CHANGE: after / before}
                if gifts:
                    figures[SOAK_PER_GIFT] = (after - before) / gifts
            self.report.ratios.update(figures)

        await self.on_service(body)

    async def sweep(self) -> None:
        """`storm` as fast as it goes, then open loop at fractions of that rate."""

        async def body(target: Target, pool: HttpPool) -> None:
            world = await self._storm_world(pool)
            top = await self.gifting("storm max", "storm", target, pool, world, 0.0)
            for fraction in self.opts.fractions:
                rate = round(top.gifts_per_s * fraction, 1)
                if rate > 0:
                    await self.gifting(f"{fraction:g} x max", "storm", target, pool, world, rate)

        await self.on_service(body)

    async def chaos(self) -> None:
        """`storm` at a steady rate while a worker, then the store, is killed (kill -9); then
        the books: every gift acked in its sender's ledger and credited, once."""
        opts = self.opts

        async def body(target: Target, pool: HttpPool) -> None:
            assert target.store is not None
            world = await self._storm_world(pool)
            faults = Faults()
            striking = asyncio.create_task(inflict(target, opts.duration_s, faults))
            try:
                with self.display.live():
                    result, tally = await run_ws(
                        "chaos",
                        "chaos",
                        "service",
                        target,
                        world.conns,
                        opts,
                        opts.rate,
                        world.gift_coins,
                        faults.watch(self.display.tick("chaos")),
                    )
                await striking
            finally:
                striking.cancel()
            senders = [c.user for c in world.conns if c.role == "sender"]
            rooms = sorted({c.room for c in world.conns})
            books = await read_books(target.store.url, senders, rooms, tally, BOOKS_SETTLE_S)
            result.books = dict(books.rows())
            result.faults = faults.done
            result.coin_check = await check_coins(pool, world, tally)
            self._check(result)
            if not books.clean:
                missing = {k: v for k, v in books.rows() if v and ("missing" in k or "twice" in k)}
                self.report.failures.append(f"chaos: gifts missing or doubled: {missing}")
            self.report.runs.append(result)

        await self.on_service(body, chaos=True)

    async def _storm_world(self, pool: HttpPool) -> World:
        opts = self.opts
        self.display.note(
            f"storm: 1 room, 1 host, {opts.viewers:,} viewers, {opts.senders} senders …"
        )
        return await room_world(pool, 1, opts.viewers, opts.senders, opts.gift)
