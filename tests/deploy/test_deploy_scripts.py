"""The scripts of deploy/, run for real: the scale-out demo on one machine (one Valkey or a local
3-primary cluster, two service nodes, a room spanning both, the audit) and the store
measurement that docs/scaling.md quotes."""

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local-scaleout.sh"
RUN_TIMEOUT_S = 100
# "node A: http://127.0.0.1:PORT (pid N)", "store: ... (pid N)"
STARTED = re.compile(r"^(store|node [AB]): (?:.*?127\.0\.0\.1:(\d+))?.*\(pid (\d+)\)$", re.M)


def script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
    env["PYTHON"] = sys.executable
    return env


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@dataclass(frozen=True)
class Started:
    what: str
    port: int | None
    pid: int


def started(output: str) -> list[Started]:
    return [
        Started(what, int(port) if port else None, int(pid))
        for what, port, pid in STARTED.findall(output)
    ]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def assert_all_stopped(output: str) -> None:
    procs = started(output)
    assert {p.what for p in procs} == {"store", "node A", "node B"}, output
    for p in procs:
        assert not alive(p.pid), f"{p.what} (pid {p.pid}) still runs"
        assert p.port is not None and not listening(p.port), f"{p.what} still listens"
    assert "stopped: every process this script started" in output


def test_scaleout_demo_spans_one_room_over_two_nodes_and_ends_with_a_clean_audit() -> None:
    result = run_script("--viewers", "3", "--gifts", "4")
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "store: one Valkey, redis://127.0.0.1:" in output
    assert "gifts sent through node B: 12, acked: 12" in output
    assert "credits to the host on node A: 12 " in output
    assert "gifts seen by the viewer on node A: 12 (from 3 senders" in output
    assert "the senders' coins read through node A: [9996]" in output
    assert "room spans 2 nodes" in output
    assert "audit clean" in output
    assert_all_stopped(output)


def test_scaleout_demo_with_cluster_spreads_keys_over_three_primaries_and_audits_clean() -> None:
    # 30 senders, a host, a viewer and a room: 33 hash tags, so that every primary holds some
    # (one of three gets none with a chance of 3 x (2/3)^33, about 1e-5).
    result = run_script("--cluster", "--viewers", "30", "--gifts", "1")
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "store: a 3-primary Valkey Cluster (a replica each), redis+cluster://" in output
    assert "room spans 2 nodes" in output
    spread = re.search(r"^keys on each primary: (.*)$", output, re.M)
    assert spread, output
    counts = [int(n) for n in re.findall(r"127\.0\.0\.1:\d+: (\d+)", spread[1])]
    assert len(counts) == 3 and all(n > 0 for n in counts), spread[1]
    assert "audit clean" in output
    assert_all_stopped(output)


def test_scaleout_demo_stops_every_process_it_started_when_terminated() -> None:
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("both nodes ready"):
                break
        assert lines and lines[-1].startswith("both nodes ready"), "".join(lines)
        before = started("".join(lines))
        assert len(before) == 3 and all(alive(p.pid) for p in before)
        proc.send_signal(signal.SIGTERM)
        lines.extend(proc.stdout)
        assert proc.wait(RUN_TIMEOUT_S) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    output = "".join(lines)
    assert "audit clean" not in output
    assert_all_stopped(output)


def test_scaleout_demo_refuses_an_unknown_argument() -> None:
    result = run_script("--nodes", "3")
    assert result.returncode == 2
    assert "unknown argument: --nodes" in result.stderr
    assert "store:" not in result.stdout


MEASURE_ARGS = ["--gifts", "300", "--users", "30", "--rooms", "3", "--tasks", "8"]


def test_store_measurement_reports_valkey_cpu_per_gift_half_memory_and_relay_scan() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "measure_store.py"),
            *MEASURE_ARGS,
            "--subscribers",
            "2",
            "--scan-keys",
            "5000",
        ],
        env=script_env() | {"PYTHONPATH": str(ROOT / "service")},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert output.startswith("300 gifts, 2 subscribed workers per room")
    for half in ("debit", "credit", "settle"):
        figure = re.search(rf"^  {half} +valkey +([\d.]+) us/call", output, re.M)
        assert figure and float(figure[1]) > 0, output
    ceiling = re.search(r"one primary's ceiling: ([\d,]+) gifts/s", output)
    assert ceiling and int(ceiling[1].replace(",", "")) > 0, output
    memory = re.search(r"store memory per gift: ([\d,]+) bytes", output)
    assert memory and int(memory[1].replace(",", "")) > 0, output
    scan = re.search(r"relay pass over ([\d,]+) keys \(0 outboxes\)", output)
    assert scan and int(scan[1].replace(",", "")) >= 5000, output
