"""`python -m loadtest SCENARIO`: load giftstream, print the summary, write the JSON, audit.

Exits 1 when a single coin is unaccounted for (the audit or the wallets), or the run failed.
"""

import argparse
import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from loadtest.commands import Command
from loadtest.http import HttpError
from loadtest.procs import LoadFailed
from loadtest.report import Display, markdown, new_report, plot, print_summary, write_json
from loadtest.scenarios import FRACTIONS, Options
from loadtest.target import TargetError

# Idle connections per user: the server allows 20 per user and worker.
CONNS_PER_USER = 10
SCENARIOS = ("storm", "rooms", "idle", "recharge", "bench", "sweep", "chaos", "soak", "battle")
# Per scenario, the defaults that differ from Options'.
DEFAULTS: dict[str, dict[str, float]] = {
    "storm": {"viewers": 1000},
    "bench": {"viewers": 1000},
    "sweep": {"viewers": 1000, "duration": 6},
    "rooms": {"viewers": 10, "rooms": 200, "rate": 400},
    "idle": {"rooms": 10},
    "recharge": {},
    "chaos": {"viewers": 50, "senders": 10, "duration": 20, "rate": 200},
    "soak": {"viewers": 1000, "gifts": 100_000},
    "battle": {"viewers": 500},
}


# What each scenario does, for its --help.
ABOUT = {
    "storm": "one room: 1 host, viewers watching, senders tapping gifts",
    "bench": "bare echo and broadcast servers, then storm as fast as it goes, at half that rate,"
    " and its senders alone in a room",
    "sweep": "storm as fast as it goes, then open loop at fractions of that rate",
    "soak": "storm until N gifts after a warm-up: Valkey's used_memory, the archive lag, gifts/s",
    "rooms": "many rooms of a host and viewers, every viewer gifting",
    "idle": "connections that authenticate, join a room and stay quiet: memory per connection",
    "recharge": "buyers over HTTP: packages, custom amounts, replays, declines, late payments",
    "battle": "two rooms in a LIVE battle, viewers in each (--viewers per room), senders gifting"
    " in both: the final scores against the coins acked, to the coin",
    "chaos": "storm on two workers and a store of its own, killing a worker then the store"
    " (kill -9) mid-run: gifts acked against the ledgers and the credits, missing and doubled",
}


def _service_flags(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("the service")
    t.add_argument("--url", help="a running giftstream (http://host:port) instead of starting one")
    t.add_argument("--workers", type=int, default=1, help="workers of the service started here (1)")
    t.add_argument("--redis-url", help="with --url: the store, for `giftstream audit`")
    t.add_argument("--data-dir", help="with --url: the embedded store's directory, for the audit")
    t.add_argument("--database-url", help="with --url: the ledger of record, for the audit")
    t.add_argument("--no-audit", action="store_true", help="skip `giftstream audit`")
    t.add_argument("--server-pid", type=int, help="with --url: read the server's memory here")
    t.add_argument("--keep", action="store_true", help="keep the started service's data and log")
    t.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="GIFTSTREAM_<NAME>=VALUE",
        help="a setting of the service started here (repeatable)",
    )


def _load_flags(p: argparse.ArgumentParser, scenario: str) -> None:
    """The load's flags that `scenario` uses, with its defaults in the help."""
    d = DEFAULTS[scenario]
    load = p.add_argument_group("the load")
    load.add_argument("--procs", type=int, default=1, help="load generator processes (1)")
    load.add_argument(
        "--duration", type=float, help=f"seconds of load per run ({d.get('duration', 10):g})"
    )
    load.add_argument(
        "--drain", type=float, default=10.0, help="most seconds to wait for answers (10)"
    )
    if scenario in ("storm", "rooms", "recharge", "chaos", "battle"):
        what = "requests" if scenario == "recharge" else "gifts"
        load.add_argument(
            "--rate",
            type=float,
            help=f"{what} per second, open loop; 0: as fast as answers come ({d.get('rate', 0):g})",
        )
    if scenario in ("storm", "bench", "sweep", "rooms", "chaos", "battle"):
        load.add_argument(
            "--window", type=int, default=8, help="gifts in flight per sender at rate 0 (8)"
        )
        load.add_argument("--gift", default="rose", help="the gift senders tap (rose)")
    if scenario in ("storm", "bench", "sweep", "chaos", "battle"):
        senders = int(d.get("senders", 20))
        load.add_argument("--senders", type=int, default=senders, help=f"senders ({senders})")
        load.add_argument("--viewers", type=int, help=f"viewers ({d['viewers']:g})")
    if scenario == "rooms":
        load.add_argument("--viewers", type=int, help=f"viewers per room ({d['viewers']:g})")
    if scenario in ("rooms", "idle"):
        load.add_argument("--rooms", type=int, help=f"rooms ({d['rooms']:g})")
    if scenario == "idle":
        load.add_argument("--conns", type=int, default=5000, help="connections (5000)")
        load.add_argument(
            "--users", type=int, help="users the connections share (one per 10 connections)"
        )
    if scenario == "recharge":
        load.add_argument("--clients", type=int, default=50, help="buyers (50)")
    if scenario == "soak":
        # storm's flags (kept apart from the lists above, which other scenarios share).
        load.add_argument(
            "--rate", type=float, help="gifts per second, open loop; 0: as fast as answers come (0)"
        )
        load.add_argument(
            "--window", type=int, default=8, help="gifts in flight per sender at rate 0 (8)"
        )
        load.add_argument("--gift", default="rose", help="the gift senders tap (rose)")
        load.add_argument("--senders", type=int, default=20, help="senders (20)")
        load.add_argument("--viewers", type=int, help=f"viewers ({d['viewers']:g})")
        load.add_argument(
            "--gifts",
            type=int,
            help=f"gifts after the warm-up, in runs of --duration each ({d['gifts']:,.0f};"
            " the issue's soak: 2000000)",
        )
    if scenario == "sweep":
        load.add_argument(
            "--fractions",
            default=",".join(f"{f:g}" for f in FRACTIONS),
            help="rates to run, as fractions of the maximum (%(default)s)",
        )


def _output_flags(p: argparse.ArgumentParser, scenario: str) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, help="default .giftstream/loadtest/SCENARIO-TIME.json")
    out.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    if scenario == "sweep":
        out.add_argument("--plot", type=Path, help="the PNG (default beside the JSON)")
    out.add_argument("--quiet", action="store_true", help="no live progress line")
    out.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy and read Valkey's command statistics during each"
        " gifting run, into DIR (collapsed stacks and a summary per run)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    scenarios = p.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for scenario in SCENARIOS:
        one = scenarios.add_parser(scenario, help=ABOUT[scenario], description=ABOUT[scenario])
        _service_flags(one)
        _load_flags(one, scenario)
        _output_flags(one, scenario)
    return p


def options(args: argparse.Namespace) -> Options:
    defaults = DEFAULTS[args.scenario]

    def pick(name: str, fallback: float) -> float:
        value = getattr(args, name, None)
        return float(value if value is not None else defaults.get(name, fallback))

    conns = getattr(args, "conns", 5000)
    return Options(
        procs=args.procs,
        duration_s=pick("duration", 10.0),
        drain_s=args.drain,
        rate=pick("rate", 0.0),
        window=getattr(args, "window", 8),
        senders=getattr(args, "senders", 20),
        viewers=int(pick("viewers", 1000)),
        rooms=int(pick("rooms", 200)),
        conns=conns,
        users=getattr(args, "users", None) or -(-conns // CONNS_PER_USER),
        clients=getattr(args, "clients", 50),
        gift=getattr(args, "gift", "rose"),
        fractions=tuple(float(f) for f in getattr(args, "fractions", "").split(",") if f.strip()),
        gifts=int(pick("gifts", 0)),
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.url and not (args.redis_url or args.data_dir or args.no_audit):
        p.error("with --url, pass --redis-url or --data-dir for `giftstream audit` (or --no-audit)")
    if any("=" not in item for item in args.server_env):
        p.error("--server-env takes GIFTSTREAM_<NAME>=VALUE")
    if min(args.procs, args.workers) < 1:
        p.error("--procs and --workers must be at least 1")
    if args.scenario == "chaos" and args.url:
        p.error("chaos kills the service's workers and store: it starts its own (no --url)")
    display = Display(args.quiet)
    report = new_report(args.url or "giftstream started here")
    command = Command(args, options(args), display, report)
    try:
        asyncio.run(getattr(command, args.scenario)())
    except (LoadFailed, TargetError, HttpError, OSError, subprocess.SubprocessError) as e:
        report.failures.append(f"{type(e).__name__}: {e}")
    report.ok = not report.failures
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json or Path(".giftstream/loadtest") / f"{args.scenario}-{stamp}.json"
    write_json(report, json_path)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
    if args.scenario == "sweep" and report.runs:
        plot_path = args.plot or json_path.with_suffix(".png")
        plot(report, plot_path)
        display.out.print(f"plot: {plot_path}")
    print_summary(display, report)
    display.out.print(f"json: {json_path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
