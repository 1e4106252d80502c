"""The `giftstream` command: serve, demo, audit. Environment variables are read only here
(through Settings.from_env) and flags override them."""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import uvicorn

from giftstream import tokens
from giftstream.keyring import SecretError, load_keyring, secret_path
from giftstream.settings import Settings
from giftstream.store.audit import run_audit
from giftstream.store.connection import connect
from giftstream.store.embedded import EmbeddedCluster, store_url


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="Redis/Valkey URL (default: embedded Valkey)")
    p.add_argument("--data-dir", type=Path, help="embedded Valkey data directory")


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    _add_store_flags(p)
    p.add_argument("--dev", action="store_true", default=None, help="enable /v1/dev/*")
    p.add_argument("--log-level", default="info", help="uvicorn log level")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="giftstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve_flags(commands.add_parser("serve", help="run the service"))
    demo = commands.add_parser("demo", help="serve --dev with simulated live rooms and bots")
    _add_serve_flags(demo)
    demo.add_argument("--rooms", type=int, default=3, help="simulated live rooms")
    demo.add_argument("--bots", type=int, default=6, help="bot viewers per room")
    audit = commands.add_parser("audit", help="check every money invariant from the ledger")
    _add_store_flags(audit)
    trial = commands.add_parser(
        "local-cluster", help="run a local Valkey Cluster (3 primaries, 3 replicas) for trials"
    )
    trial.add_argument("--dir", type=Path, default=Path(".giftstream-cluster"), help="data")
    minter = commands.add_parser("admin-token", help="print a token with role admin")
    _add_store_flags(minter)
    minter.add_argument("--ttl-s", type=int, default=3600, help="lifetime in seconds")
    return parser


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in ("host", "port", "workers", "redis_url", "data_dir", "dev")
    }
    overrides.update(extra)
    return Settings.from_env(**overrides)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings, log_level: str, on_ready: object = None) -> None:
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
    with store_url(settings.redis_url, settings.data_dir, settings.aof_fsync) as url:
        settings = replace(settings, redis_url=url)
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
            loop="uvloop",
            http="httptools",
            log_level=log_level,
            timeout_graceful_shutdown=10,
        )


def audit(settings: Settings) -> int:
    async def run(url: str) -> int:
        redis = connect(url)
        try:
            report = await run_audit(redis)
        finally:
            await redis.aclose()
        print(report.summary())
        return 0 if report.clean else 1

    with store_url(settings.redis_url, settings.data_dir, settings.aof_fsync) as url:
        return asyncio.run(run(url))


def admin_token(settings: Settings, ttl_s: int) -> int:
    """Sign an admin token with the servers' key (the same setting or data directory)."""
    claims = tokens.Claims(user="admin", role="admin", expires=int(time.time()) + ttl_s)
    print(tokens.sign(claims, load_keyring(settings)))
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
    try:
        return _run(args)
    except SecretError as e:
        print(f"giftstream: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        serve(_settings(args), args.log_level)
        return 0
    if args.command == "demo":
        from giftstream.demo import start_bots

        settings = _settings(args, dev=True)
        serve(settings, args.log_level, on_ready=start_bots(args.rooms, args.bots))
        return 0
    if args.command == "local-cluster":
        return local_cluster(args.dir)
    if args.command == "admin-token":
        return admin_token(_settings(args), args.ttl_s)
    return audit(_settings(args))


if __name__ == "__main__":
    sys.exit(main())
