"""The token secret at rest: never in the store, private files, weak secrets refused, dev tokens
refused by live servers, and a key rotation with both keys valid (issue #15, item 1)."""

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from giftstream.store import keys
from giftstream.store.connection import connect
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.postgres import database_url
from support import Api, ServerProcess, bearer, serving

OLD_SECRET = secrets.token_urlsafe(40)
NEW_SECRET = secrets.token_urlsafe(40)


def admin_token(env: dict[str, str], *args: str) -> str:
    """`giftstream admin-token` with the environment `env` (and no other GIFTSTREAM_ variable)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "giftstream.cli", "admin-token", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


async def admin_status(api: Api, token: str) -> int:
    """The status of an admin request with `token`: 404 (no such room) when it is accepted."""
    r = await api.http.get(
        "/v1/admin/rooms/none-such", headers={"authorization": f"Bearer {token}"}
    )
    return r.status_code


async def test_the_data_directory_is_private_and_the_secret_is_neither_in_the_store_nor_its_aof(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    # An earlier version left its secret in the store, and the AOF readable by every user.
    legacy = EmbeddedValkey(data)
    legacy.start()
    client = connect(legacy.url)
    try:
        await client.set(keys.LEGACY_SECRET, "the-old-secret-in-the-store")
    finally:
        await client.aclose()
    legacy.stop()
    for path in data.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    data.chmod(0o755)

    async with serving(ServerProcess(redis_url=None, data_dir=data, dev=False, secret=None)) as (
        _,
        api,
    ):
        with database_url(None, data) as url:  # the running embedded PostgreSQL's
            pass
        token = admin_token({}, "--data-dir", str(data))
        assert await admin_status(api, token) == 404, "admin-token signs with the servers' key"
        # The embedded PostgreSQL (its own user, when we are root) still reaches its files: a
        # checkpoint writes pg_control, which failed once the data directory lost its x bit.
        ledger = await asyncpg.connect(url)
        try:
            await ledger.execute("CHECKPOINT")
            assert await ledger.fetchval("SELECT 1") == 1
        finally:
            await ledger.close()
        client = connect(f"unix://{data.resolve() / 'valkey.sock'}")
        try:
            assert await client.exists(keys.LEGACY_SECRET) == 0, "the old key is deleted"
            await client.execute_command("BGREWRITEAOF")
        finally:
            await client.aclose()
        modes = {
            p.relative_to(data).as_posix(): stat.S_IMODE(p.lstat().st_mode)
            for p in data.rglob("*")
            if not p.is_socket()
        }
    secret = (data / "secret").read_bytes().strip()
    # Others may only pass through, and only to the embedded PostgreSQL run as its own user.
    assert stat.S_IMODE(data.stat().st_mode) == (0o711 if os.geteuid() == 0 else 0o700)
    assert any(name.startswith("appendonlydir/") for name in modes), modes
    assert {n: m for n, m in modes.items() if m & 0o077 and not n.startswith("postgres")} == {}, (
        "nothing for group or others"
    )
    for aof in (data / "appendonlydir").iterdir():
        body = aof.read_bytes()
        assert secret not in body and b"the-old-secret-in-the-store" not in body


def test_a_weak_secret_stops_a_live_server_at_start_up_with_the_reason(short_tmp: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
    done = subprocess.run(
        [sys.executable, "-m", "giftstream.cli", "serve", "--data-dir", str(short_tmp / "d")],
        env={**base, "GIFTSTREAM_SECRET": "a" * 40},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "the token secret is too weak" in done.stderr and "openssl rand" in done.stderr
    assert not (short_tmp / "d" / "valkey.sock").exists(), "no store was started"


async def test_a_live_server_refuses_the_admin_token_of_a_dev_server_with_the_same_secret(
    fresh_valkey: EmbeddedValkey,
) -> None:
    env = {"GIFTSTREAM_SECRET": NEW_SECRET}
    async with serving(ServerProcess(fresh_valkey.url, env=env)) as (_, dev_api):
        admin = await dev_api.user(role="admin")
    async with serving(ServerProcess(fresh_valkey.url, env=env, dev=False)) as (_, live_api):
        r = await live_api.http.get(f"/v1/admin/users/{admin.user}", headers=bearer(admin))
        assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")
        assert "dev-mode" in r.json()["message"]
        assert await admin_status(live_api, admin_token(env)) == 404, "a live token is accepted"


async def test_a_key_rotation_accepts_both_keys_then_only_the_new_one(
    fresh_valkey: EmbeddedValkey,
) -> None:
    old_token = admin_token({"GIFTSTREAM_SECRET": OLD_SECRET})
    rotating = {"GIFTSTREAM_SECRET": NEW_SECRET, "GIFTSTREAM_SECRET_PREVIOUS": OLD_SECRET}
    async with serving(ServerProcess(fresh_valkey.url, env=rotating, dev=False)) as (_, api):
        assert await admin_status(api, old_token) == 404, "tokens of the previous key still work"
        new_token = admin_token(rotating)
        assert await admin_status(api, new_token) == 404
    after = {"GIFTSTREAM_SECRET": NEW_SECRET}
    async with serving(ServerProcess(fresh_valkey.url, env=after, dev=False)) as (_, api):
        assert await admin_status(api, new_token) == 404, "tokens signed during the change work"
        assert await admin_status(api, old_token) == 401, "the retired key is refused"


async def test_every_worker_of_one_serve_accepts_the_tokens_of_the_others(short_tmp: Path) -> None:
    data = short_tmp / "data"
    async with serving(ServerProcess(redis_url=None, data_dir=data, workers=2, secret=None)) as (
        _,
        api,
    ):
        users = [await api.user(coins=1) for _ in range(12)]
        # New connections land on either worker (SO_REUSEPORT): each accepts every token.
        for user in users:
            async with httpx.AsyncClient(base_url=api.http.base_url) as fresh:
                r = await fresh.get("/v1/wallet", headers=bearer(user))
                assert r.status_code == 200, r.text
    assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600
