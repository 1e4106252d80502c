"""What the ledger of record serves: GET /v1/history, `giftstream ledger export` and `ledger
summary`, and the embedded PostgreSQL that `serve` runs and the export reuses."""

import csv
import io
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.ledger import EXPORT_COLUMNS
from support import (
    Api,
    ServerProcess,
    bearer,
    serving,
    store,
)
from support.ledger import FAST_ARCHIVE, ledger_cli, traffic, wait_archived


async def test_history_pages_newest_first_through_every_entry_of_the_user(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api, gifts=10)
        await wait_archived(redis, db)
        pages, seen, cursor = 0, [], None
        while True:
            params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
            r = await api.http.get("/v1/history", params=params, headers=bearer(done.viewer))
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["entries"]) <= 3
            seen += body["entries"]
            pages += 1
            cursor = body["next"]
            if cursor is None:
                break
        assert pages == 4  # 12 entries: a grant, a purchase, 10 gifts
        assert [e["kind"] for e in seen] == ["gift"] * 10 + ["purchase", "grant"]
        ids = [tuple(int(p) for p in e["id"].split("-")) for e in seen]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
        wallet = await api.wallet(done.viewer)
        assert seen[0]["balance"] == wallet["coins"]
        assert sum(e["coins"] for e in seen) == wallet["coins"]

        r = await api.http.get("/v1/history", headers=bearer(done.host))
        host_entries = r.json()["entries"]
        assert [e["kind"] for e in host_entries] == ["credit"] * 10
        assert sum(e["diamonds"] for e in host_entries) == (await api.wallet(done.host))["diamonds"]
        assert all(e["from"] == done.viewer.user for e in host_entries)


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"cursor": "not-a-cursor"}],
)
async def test_history_refuses_a_bad_limit_or_cursor_with_invalid_field(
    server: ServerProcess, api: Api, params: dict[str, str]
) -> None:
    viewer = await api.user(coins=1)
    r = await api.http.get("/v1/history", params=params, headers=bearer(viewer))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_field"


async def test_history_needs_a_token(server: ServerProcess, api: Api) -> None:
    r = await api.http.get("/v1/history")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated"


async def test_the_exports_csv_sums_match_the_wallets_and_the_summary_the_day(
    fresh_valkey: EmbeddedValkey, database: str, db: asyncpg.Connection
) -> None:
    server = ServerProcess(fresh_valkey.url, env=FAST_ARCHIVE, database_url=database)
    async with serving(server) as (_, api), store(fresh_valkey.url) as redis:
        done = await traffic(server, api, gifts=9)
        await wait_archived(redis, db)
        viewer, host = await api.wallet(done.viewer), await api.wallet(done.host)
    today = datetime.now(UTC).date()
    span = ["--from", today.isoformat(), "--to", (today + timedelta(days=1)).isoformat()]
    code, out, err = await ledger_cli("export", *span, "--database-url", database)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert err.strip() == f"{len(rows)} entries"
    coins: dict[str, int] = {}
    diamonds: dict[str, int] = {}
    for row in rows:
        coins[row["owner"]] = coins.get(row["owner"], 0) + int(row["coins"])
        if row["owner_kind"] == "room":
            diamonds[row["host"]] = diamonds.get(row["host"], 0) + int(row["diamonds"])
    assert coins[done.viewer.user] == viewer["coins"]
    assert diamonds[done.host.user] == host["diamonds"]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.jsonl"
        code, _, err = await ledger_cli(
            "export", *span, "--format", "jsonl", "--out", str(path), "--database-url", database
        )
        assert code == 0, err
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["stream"], x["entry"]) for x in lines] == [(r["stream"], r["entry"]) for r in rows]

    code, out, err = await ledger_cli(
        "summary", "--day", today.isoformat(), "--database-url", database
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["diamonds_credited"] == host["diamonds"]
    gift_coins = sum(-int(r["coins"]) for r in rows if r["kind"] == "gift")
    assert summary["gift_coins_credited"] == gift_coins
    assert summary["commission_coins"] == gift_coins - host["diamonds"]
    assert [(s["region"], s["channel"], s["purchases"]) for s in summary["sales"]] == [
        ("US", "web", 1)
    ]


async def test_an_export_range_with_no_entries_writes_only_the_header(database: str) -> None:
    code, out, err = await ledger_cli(
        "export", "--from", "2001-01-01", "--to", "2001-01-02", "--database-url", database
    )
    assert code == 0, err
    assert out.splitlines() == [",".join(EXPORT_COLUMNS)]


async def test_a_bad_export_range_or_day_is_refused_with_a_sentence(database: str) -> None:
    code, _, err = await ledger_cli(
        "export", "--from", "yesterday", "--to", "2001-01-02", "--database-url", database
    )
    assert code == 2
    assert "not an ISO date" in err
    code, _, err = await ledger_cli(
        "export", "--from", "2001-01-02", "--to", "2001-01-01", "--database-url", database
    )
    assert (code, err.strip()) == (2, "--to must come after --from")
    code, _, err = await ledger_cli("summary", "--day", "monday", "--database-url", database)
    assert (code, err.strip()) == (2, "--day must be YYYY-MM-DD, not 'monday'")


async def test_serve_runs_an_embedded_postgresql_in_the_data_dir_that_the_export_reuses(
    short_tmp: Path,
) -> None:
    data = short_tmp / "data"
    pgdata = data / "postgres"
    url = f"postgresql://postgres:@/postgres?host={pgdata}"
    server = ServerProcess(redis_url=None, data_dir=data, env=FAST_ARCHIVE)
    async with serving(server) as (_, api), store(f"unix://{data / 'valkey.sock'}") as redis:
        assert (pgdata / "postmaster.pid").exists()
        done = await traffic(server, api, gifts=3)
        db = await asyncpg.connect(url)
        try:
            await wait_archived(redis, db)
        finally:
            await db.close()
        viewer = await api.wallet(done.viewer)
    assert not (pgdata / "postmaster.pid").exists(), "serve left its PostgreSQL running"
    if os.geteuid() == 0:
        assert data.stat().st_mode & 0o777 == 0o711  # the server's own user can reach its folder

    today = datetime.now(UTC).date()
    code, out, err = await ledger_cli(
        "export",
        "--from",
        today.isoformat(),
        "--to",
        str(today + timedelta(days=1)),
        "--data-dir",
        str(data),
    )
    assert code == 0, err
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["owner"] == done.viewer.user]
    assert sum(int(r["coins"]) for r in rows) == viewer["coins"]
    assert not (pgdata / "postmaster.pid").exists(), "the export left PostgreSQL running"
