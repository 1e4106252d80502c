"""`python -m loadtest` end to end, a couple of seconds per scenario against a real service: it
runs, writes its JSON, counts no error, and the audit and the wallets balance. A correctness
check only: no figure is asserted."""

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from giftstream.store import keys
from giftstream.store.connection import connect
from giftstream.store.embedded import EmbeddedValkey
from loadtest.commands import (
    BENCH_LIMITS,
    SOAK_END,
    SOAK_GIFTS,
    SOAK_LAG_S,
    SOAK_PER_GIFT,
    SOAK_RATE,
    SOAK_WARM,
)
from loadtest.profile import summarise
from support import Api, ServerProcess, database_for, running, temporary_valkey

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 110.0
SMALL = {
    "storm": ["--viewers", "20", "--senders", "3"],
    "rooms": ["--rooms", "4", "--viewers", "3", "--rate", "40"],
    "idle": ["--conns", "60", "--rooms", "2", "--users", "5"],
    "recharge": ["--clients", "4"],
}


def loadtest(out: Path, *args: str, seconds: int = 2) -> tuple[int, dict[str, Any], str]:
    """Exit code, JSON report and output of one run of `seconds` per load."""
    command = [sys.executable, "-m", "loadtest", *args, "--duration", str(seconds)]
    done = subprocess.run(
        [*command, "--quiet", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    report: dict[str, Any] = json.loads(out.read_text())
    return done.returncode, report, output


@pytest.fixture(scope="module")
def store() -> Iterator[EmbeddedValkey]:
    with temporary_valkey() as server:
        yield server


@pytest.fixture(scope="module")
def service(store: EmbeddedValkey) -> Iterator[ServerProcess]:
    """A service as the load tool starts one: its per-user limits lifted."""
    with running(ServerProcess(store.url, env=BENCH_LIMITS)) as s:
        yield s


def running_service(service: ServerProcess, store: EmbeddedValkey) -> list[str]:
    """The flags that point the load tool at the module's service and its store."""
    assert service.process is not None
    return [
        *("--url", service.base_url, "--redis-url", store.url),
        *("--database-url", database_for(store.url), "--server-pid", str(service.process.pid)),
    ]


@pytest.mark.parametrize("scenario", sorted(SMALL))
def test_each_scenario_runs_without_errors_and_the_books_balance(
    scenario: str, service: ServerProcess, store: EmbeddedValkey, tmp_path: Path
) -> None:
    assert service.process is not None
    code, report, output = loadtest(
        tmp_path / "out.json",
        scenario,
        *SMALL[scenario],
        *running_service(service, store),
    )
    assert code == 0, output
    assert report["ok"] and report["audit_clean"], output
    (run,) = report["runs"]
    assert run["scenario"] == scenario
    assert run["errors"] == {}, run["errors"]
    assert run["connections"] > 0
    assert run["usage"]["per_connection_bytes"] is not None
    if scenario == "recharge":
        assert run["requests_per_s"] > 0
        assert set(run["http_latency"]) >= {"package", "declined", "wallet"}
    if scenario in ("storm", "rooms"):
        assert run["gifts_acked"] > 0 and run["gifts_acked"] == run["gifts_sent"]
        assert set(run["ack_latency"]) == {"count", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
        assert run["host_credit_latency"]["count"] == run["gifts_acked"]
        assert run["frames_delivered_per_s"] > 0 and run["frames_per_viewer_per_s"] > 0
        # At most one gift frame per gift per member (merging within a tick takes from it).
        assert 0 < run["delivery_ratio"] <= 1, run
    if scenario == "recharge":
        # HTTP buyers: no row of frames, gifts or per-connection memory in the table.
        for row in ("frames", "delivered / expected", "/gift", "rate asked", "RSS /connection"):
            assert row not in output, output
    if scenario in ("storm", "rooms", "recharge"):
        assert run["coin_check"]["users"] > 0 and run["coin_check"]["coins_missing"] == 0


def test_battle_ends_with_each_rooms_score_equal_to_the_coins_acked_in_it(
    service: ServerProcess, store: EmbeddedValkey, tmp_path: Path
) -> None:
    assert service.process is not None
    code, report, output = loadtest(
        tmp_path / "out.json",
        "battle",
        *("--viewers", "5", "--senders", "2", "--rate", "60"),
        *("--url", service.base_url, "--redis-url", store.url),
        *("--database-url", database_for(store.url), "--server-pid", str(service.process.pid)),
    )
    assert code == 0, output
    assert report["ok"] and report["audit_clean"], output
    (run,) = report["runs"]
    assert run["errors"] == {} and run["gifts_acked"] > 0, run
    assert run["coin_check"]["coins_missing"] == 0
    figures = report["ratios"]
    for n in (1, 2):
        acked = figures[f"battle: room {n} coins acked"]
        assert acked > 0 and figures[f"battle: room {n} score (coins)"] == acked, figures
    assert sum(figures[f"battle: room {n} coins acked"] for n in (1, 2)) == run["gifts_acked"]


def test_soak_runs_past_its_gifts_and_reports_valkey_memory_the_archive_lag_and_the_rate(
    service: ServerProcess, store: EmbeddedValkey, tmp_path: Path
) -> None:
    assert service.process is not None
    code, report, output = loadtest(
        tmp_path / "out.json",
        "soak",
        *("--viewers", "10", "--senders", "2", "--gifts", "300"),
        *("--url", service.base_url, "--redis-url", store.url),
        *("--database-url", database_for(store.url), "--server-pid", str(service.process.pid)),
        seconds=1,
    )
    assert code == 0, output
    assert report["ok"] and report["audit_clean"], output
    labels = [run["label"] for run in report["runs"]]
    assert labels[0] == "soak warm-up" and labels[1:] == [
        f"soak {n}" for n in range(1, len(labels))
    ]
    figures = report["ratios"]
    assert figures[SOAK_GIFTS] >= 300 and figures[SOAK_RATE] > 0, figures
    assert figures[SOAK_WARM] > 0 and figures[SOAK_END] > 0, figures
    assert {SOAK_PER_GIFT, SOAK_LAG_S} <= set(figures), figures
    assert "ledger entries read:" in report["audit_output"], report["audit_output"]


def test_bench_starts_the_service_and_the_bare_servers_and_gives_ratios(tmp_path: Path) -> None:
    code, report, output = loadtest(
        tmp_path / "out.json", "bench", "--viewers", "10", "--senders", "6", seconds=1
    )
    assert code == 0, output
    assert report["ok"] and report["audit_clean"], output
    # Piped, the five runs' table is not wrapped at 80 columns: one line per row.
    (ack,) = [line for line in output.splitlines() if "ack p50 (ms)" in line]
    assert ack.count("│") == 7 and len(ack) > 80, output
    servers = [run["server"] for run in report["runs"]]
    assert servers == ["bare echo", "bare broadcast"] + ["giftstream"] * 3
    assert all(run["errors"] == {} for run in report["runs"]), report["runs"]
    assert set(report["ratios"]) >= {
        "storm gifts acked/s ÷ bare echo round trips/s",
        "storm frames delivered/s ÷ bare broadcast frames delivered/s",
        "no-viewers gifts acked/s ÷ bare echo round trips/s",
    }


def test_chaos_kills_a_worker_and_the_store_and_finds_every_acked_gift_once(
    tmp_path: Path,
) -> None:
    code, report, output = loadtest(
        tmp_path / "out.json",
        "chaos",
        *("--viewers", "10", "--senders", "3", "--rate", "60"),
        seconds=6,
    )
    assert code == 0, output
    assert report["ok"] and report["audit_clean"], output
    (run,) = report["runs"]
    faults = run["faults"]
    assert len(faults) == 3 and "kill -9 worker" in faults[0], faults
    assert "kill -9 the store" in faults[1] and "started again" in faults[2], faults
    books = run["books"]
    assert books["gifts acked"] == run["gifts_acked"] > 0
    assert books["gifts in the senders' ledgers"] == books["gifts acked"]
    assert books["credits the hosts saw"] == books["gifts acked"]
    missing_or_doubled = {k: v for k, v in books.items() if "missing" in k or "twice" in k}
    assert set(missing_or_doubled.values()) == {0}, books
    assert run["coin_check"]["coins_missing"] == 0


async def test_a_coin_missing_from_the_store_fails_the_run(tmp_path: Path) -> None:
    data = Path(tempfile.mkdtemp(prefix="gs-"))
    store = EmbeddedValkey(data / "data")
    store.start()
    try:
        with running(ServerProcess(store.url)) as service:
            api = Api(service.base_url)
            user = await api.user(coins=100)
            await api.aclose()
            redis = connect(store.url)
            await redis.hincrby(keys.account(user.user), "coins", -1)
            await redis.aclose()
            code, report, output = loadtest(
                tmp_path / "out.json",
                "idle",
                "--conns",
                "5",
                "--url",
                service.base_url,
                "--redis-url",
                store.url,
            )
    finally:
        store.stop()
        shutil.rmtree(data, ignore_errors=True)
    assert code == 1, output
    assert report["audit_clean"] is False and report["ok"] is False
    assert "audit FAILED" in report["audit_output"]


def test_each_scenario_help_lists_the_flags_it_uses_and_no_other() -> None:
    def help_of(scenario: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "loadtest", scenario, "--help"],
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=True,
        )
        return done.stdout.decode()

    idle, recharge, sweep = help_of("idle"), help_of("recharge"), help_of("sweep")
    assert "--conns" in idle and "--senders" not in idle and "--clients" not in idle
    assert "--clients" in recharge and "--window" not in recharge and "--viewers" not in recharge
    assert "--fractions" in sweep and "--plot" in sweep and "--rate" not in sweep
    assert "--url" in idle and "--url" in recharge and "--json" in sweep


def test_profile_samples_the_server_and_reads_valkeys_command_statistics(
    service: ServerProcess, store: EmbeddedValkey, tmp_path: Path
) -> None:
    assert service.process is not None
    profiles = tmp_path / "profile"
    code, _, output = loadtest(
        tmp_path / "out.json",
        "storm",
        *SMALL["storm"],
        *running_service(service, store),
        "--profile",
        str(profiles),
    )
    assert code == 0, output
    pid = service.process.pid
    stacks = (profiles / f"storm-server-{pid}.txt").read_text()
    # The server's own code is on the sampled stacks, and the summary ranks it.
    assert "giftstream/" in stacks, stacks[:2000]
    summary = (profiles / f"storm-server-{pid}-top.txt").read_text()
    assert "samples at" in summary and "(giftstream/" in summary, summary
    # The gifts' Functions ran during the window that the statistics cover.
    valkey = (profiles / "storm-valkey.txt").read_text()
    assert any(line.startswith("fcall ") for line in valkey.splitlines()), valkey


def test_profile_summary_counts_each_function_once_per_stack() -> None:
    collapsed = "\n".join(
        [
            "main (app.py:1);send (giftstream/gifting.py:10);pack (msgpack/x.py:3) 3",
            "main (app.py:1);send (giftstream/gifting.py:12) 1",
            "main (app.py:1);loop (app.py:5);loop (app.py:6) 4",
        ]
    )
    lines = summarise(collapsed).splitlines()
    assert lines[0] == "8 samples at 250/s"
    start = lines.index("self %  function") + 1
    own = lines[start : lines.index("", start)]
    assert "  50.0  loop (app.py)" in own  # self: 4 of 8, its two lines one function
    assert "  37.5  pack (msgpack/x.py)" in own
    assert "   50.0  send (giftstream/gifting.py)" in lines  # total: 3 + 1 of 8
    assert "  100.0  main (app.py)" in lines
    assert "   50.0  loop (app.py)" in lines  # on its stack twice, counted once
