"""The `giftstream` command as a new user meets it: its help, and what the demo prints."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import ServerProcess

HELP_TIMEOUT_S = 30.0
DEMO_TIMEOUT_S = 30.0


def help_of(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "giftstream.cli", *command, "--help"],
        capture_output=True,
        timeout=HELP_TIMEOUT_S,
        check=True,
        # Wide enough that argparse keeps each flag's help on one line.
        env={**os.environ, "COLUMNS": "200"},
    )
    return done.stdout.decode()


def test_the_help_speaks_to_users_and_shows_the_defaults() -> None:
    top = help_of()
    assert "giftstream demo" in top and "GIFTSTREAM_" in top
    assert "read only here" not in top  # the module's note for developers
    demo = help_of("demo")
    assert "--dev" not in demo  # the demo is always in dev mode
    assert "simulated live rooms (default 3)" in demo
    assert "bot viewers per room (default 6)" in demo
    assert "--access-log" in demo
    cluster = help_of("local-cluster")
    assert "where the nodes keep their data and logs (default .giftstream-cluster)" in cluster


def test_the_demo_prints_its_links_last_between_rules_and_stops_quietly_on_ctrl_c(
    short_tmp: Path,
) -> None:
    demo = ServerProcess(
        redis_url=None, data_dir=short_tmp / "data", command="demo", args=["--rooms", "2"]
    )
    demo.start()
    try:
        assert demo.log_path is not None
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while "Ctrl+C stops everything" not in demo.log_path.read_text():
            assert time.monotonic() < deadline, demo.log()
            time.sleep(0.05)
        assert demo.process is not None
        demo.process.send_signal(signal.SIGINT)
        assert demo.wait_exit() == 0
    finally:
        demo.stop()

    lines = [line for line in demo.log_path.read_text().splitlines() if line.strip()]
    rule = "═" * 78
    assert lines[-1] == rule and lines.count(rule) == 2, lines
    box = lines[lines.index(rule) + 1 : -1]
    assert box[0] == f"giftstream demo: open {demo.base_url}/", box
    assert len([line for line in box if "/?room=" in line]) == 2, box
    assert len([line for line in box if "/?host=1&token=" in line]) == 2, box
    # No request log, and no line per bot reconnecting while the server stops.
    assert not [line for line in lines if "HTTP/1.1" in line or "reconnecting" in line], lines
