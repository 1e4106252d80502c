"""The server under load: giftstream started here (on a free loopback port, with a fresh data
directory) or already running at a URL; or one of the bare baseline servers. Its memory from
/proc, and the audit of its store.
One module (~330 lines): the three kinds of target share the process helpers."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from giftstream.store.embedded import EmbeddedValkey, url_for
from loadtest.http import split_url

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
AUDIT_TIMEOUT_S = 600.0
VALKEY_NAMES = ("valkey-server", "redis-server")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


METRICS_TIMEOUT_S = 5.0


class TargetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Usage:
    """A server's processes now: resident memory (/proc/<pid>/status, VmRSS) and CPU time so
    far (/proc/<pid>/stat, user + system), the store (Valkey) apart from the rest."""

    server_bytes: int
    store_bytes: int
    server_cpu_s: float
    store_cpu_s: float
    pids: tuple[int, ...]


@dataclass(frozen=True)
class AuditResult:
    clean: bool
    output: str


@dataclass
class Target:
    url: str
    # Arguments of `giftstream audit` that reach the store; None when there is no store.
    audit_args: list[str] | None
    root_pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)
    # Whether a load connected here before: a process reuses the memory freed by closed
    # connections, so only the first load shows what a connection costs.
    loaded: bool = False
    # The store, when it was started here apart from the service (to be killed and restarted).
    store: EmbeddedValkey | None = None

    @property
    def host(self) -> str:
        return split_url(self.url)[0]

    @property
    def port(self) -> int:
        return split_url(self.url)[1]

    @property
    def store_url(self) -> str | None:
        """The store's URL, when the audit knows it."""
        args = self.audit_args or []
        if "--redis-url" in args:
            return args[args.index("--redis-url") + 1]
        if "--data-dir" in args:
            return url_for(Path(args[args.index("--data-dir") + 1]))
        return None

    def usage(self) -> Usage | None:
        if self.root_pid is None:
            return None
        memory = {True: 0, False: 0}
        cpu = {True: 0.0, False: 0.0}
        pids = _tree(self.root_pid)
        for pid in pids:
            store = _name(pid) in VALKEY_NAMES
            memory[store] += _rss_bytes(pid)
            cpu[store] += _cpu_s(pid)
        return Usage(memory[False], memory[True], cpu[False], cpu[True], tuple(pids))

    def counters(self, names: tuple[str, ...]) -> dict[str, float] | None:
        """Counters of the server's /metrics (one worker's); None where it has none."""
        if self.audit_args is None:  # a bare baseline server
            return None
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=METRICS_TIMEOUT_S) as r:
                text = r.read().decode()
        except OSError:
            return None
        found = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                found[name] = float(value)
        return found

    def audit(self) -> AuditResult | None:
        if self.audit_args is None:
            return None
        result = subprocess.run(
            [sys.executable, "-m", "giftstream.cli", "audit", *self.audit_args],
            capture_output=True,
            timeout=AUDIT_TIMEOUT_S,
            check=False,
        )
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        return AuditResult(result.returncode == 0, output)

    def worker_pids(self) -> list[int]:
        """The service's worker processes (uvicorn spawns them with multiprocessing)."""
        if self.root_pid is None:
            return []
        return [p for p in _tree(self.root_pid)[1:] if "spawn_main" in _cmdline(p)]

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tree(root: int) -> list[int]:
    """`root` and its descendants, from the parent pid in each /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); here they follow the name, from 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _clean_env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without GIFTSTREAM_* settings but `settings`, and with this package
    importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
    env.update(settings or {})
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def _wait_http_ready(target: Target, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(target.url + path, timeout=2.0) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if target.process is not None and target.process.poll() is not None:
            raise TargetError(f"{target.description} exited at start:\n{target.log_tail()}")
        if time.monotonic() > deadline:
            raise TargetError(f"{target.description} not ready in time:\n{target.log_tail()}")
        time.sleep(0.1)


def _wait_tcp_ready(target: Target) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with socket.socket() as s:
            if s.connect_ex((target.host, target.port)) == 0:
                return
        if target.process is not None and target.process.poll() is not None:
            raise TargetError(f"{target.description} exited at start:\n{target.log_tail()}")
        if time.monotonic() > deadline:
            raise TargetError(f"{target.description} not ready in time")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _spawned(
    args: list[str], target: Target, keep: bool, settings: dict[str, str] | None = None
) -> Iterator[Target]:
    assert target.workdir is not None
    target.log_path = target.workdir / "server.log"
    try:
        with open(target.log_path, "wb") as log:
            target.process = subprocess.Popen(
                args, env=_clean_env(settings), stdout=log, stderr=subprocess.STDOUT
            )
        target.root_pid = target.process.pid
        yield target
    finally:
        if target.process is not None:
            _stop(target.process)
        if not keep:
            shutil.rmtree(target.workdir, ignore_errors=True)


@contextlib.contextmanager
def giftstream_service(
    workers: int, settings: dict[str, str], keep: bool = False, own_store: bool = False
) -> Iterator[Target]:
    """`giftstream serve --dev` on a free loopback port with a fresh embedded store, with
    `settings` (GIFTSTREAM_* variables) and no other. With `own_store`, the store is started
    here, apart from the service (`target.store`), so that it can be killed and restarted."""
    # Short: the store's unix socket path must fit in 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="gs-lt-"))
    data_dir = workdir / "data"
    port = free_port()
    target = Target(
        url=f"http://127.0.0.1:{port}",
        audit_args=["--data-dir", str(data_dir)],
        workdir=workdir,
        description=f"giftstream serve --workers {workers}",
    )
    args = [
        sys.executable,
        "-m",
        "giftstream.cli",
        "serve",
        "--dev",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    with contextlib.ExitStack() as stack:
        if own_store:
            if not keep:  # last, once the store has stopped
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            # Everything the senders were answered is on disk when the store dies.
            target.store = EmbeddedValkey(data_dir, aof_fsync="always")
            target.store.start()
            stack.callback(target.store.stop)
            # The ledger's PostgreSQL in the same data directory, for the service and the audit.
            target.audit_args = ["--redis-url", target.store.url, "--data-dir", str(data_dir)]
            args += target.audit_args
        else:
            args += ["--data-dir", str(data_dir)]
        with _spawned(args, target, keep or own_store, settings):
            _wait_http_ready(target, "/readyz")
            if keep:
                target.notes.append(f"data and log kept in {workdir}")
            yield target


@contextlib.contextmanager
def baseline_server(kind: str) -> Iterator[Target]:
    """A bare `websockets` server (`echo` or `broadcast`) in its own process."""
    workdir = Path(tempfile.mkdtemp(prefix="gs-lt-"))
    port = free_port()
    target = Target(
        url=f"http://127.0.0.1:{port}",
        audit_args=None,
        workdir=workdir,
        description=f"bare websockets {kind} server",
    )
    args = [sys.executable, "-m", "loadtest.baselines", kind, "--port", str(port)]
    with _spawned(args, target, keep=False):
        _wait_tcp_ready(target)
        yield target


def external(url: str, audit_args: list[str] | None, server_pid: int | None) -> Target:
    return Target(url=url, audit_args=audit_args, root_pid=server_pid, description=url)
