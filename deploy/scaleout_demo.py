"""The Python half of deploy/local-scaleout.sh: free ports, waiting for servers, the keys on
each primary of a cluster, and the loopback load that shows one room spanning two service nodes.

    python deploy/scaleout_demo.py ports N
    python deploy/scaleout_demo.py wait-valkey PORT [--pid PID]
    python deploy/scaleout_demo.py wait-ready URL... [--pid PID]...
    python deploy/scaleout_demo.py spread CLUSTER_URL
    python deploy/scaleout_demo.py load NODE_A NODE_B [--viewers N] [--gifts N]

Every wait is bounded (--timeout, 30 s by default) and fails at once when the awaited process
has exited. Loopback only.
"""

import argparse
import asyncio
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from giftstream_client import Client, CreditEvent, GiftEvent, StreakEnded

WAIT_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 60.0
POLL_S = 0.05
START_COINS = 10_000
GIFT = "rose"


class DemoFailed(Exception):
    pass


# -- ports and waiting -----------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports of 127.0.0.1 (held open together while they are picked)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def alive(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(check: Callable[[], bool], what: str, pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        for pid in pids:
            if not alive(pid):
                raise DemoFailed(f"process {pid} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


def valkey_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# -- a cluster -------------------------------------------------------------------------------


def keys_per_node(url: str) -> dict[str, int]:
    """DBSIZE of each node named in a redis+cluster:// URL (loopback, no password)."""
    counts = {}
    for seed in url.split("://", 1)[1].split("/", 1)[0].split(","):
        host, _, port = seed.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5.0) as s:
            s.sendall(b"DBSIZE\r\n")
            reply = s.recv(64)
        if not reply.startswith(b":"):
            raise DemoFailed(f"DBSIZE on {seed} answered {reply!r}")
        counts[seed] = int(reply[1:].split(b"\r\n", 1)[0])
    return counts


# -- the load ------------------------------------------------------------------------------


@dataclass
class User:
    user: str
    token: str


def _post(base_url: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10.0) as response:
        return json.load(response)


def _get(base_url: str, path: str, token: str) -> Any:
    request = urllib.request.Request(base_url + path, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10.0) as response:
        return json.load(response)


def dev_user(base_url: str, name: str, role: str, coins: int) -> User:
    body = _post(
        base_url, "/v1/dev/users", {"name": name, "region": "US", "role": role, "coins": coins}
    )
    return User(body["user"], body["token"])


def ws_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"ws://{parts.netloc}/v1/ws"


@dataclass
class Seen:
    """What one listener received from the room."""

    # Gift frames are lossy and a streak's taps are merged (the newest `repeat` replaces the
    # older ones), so a viewer counts gifts by streak: streak id -> the highest repeat seen.
    streaks: dict[str, int] = field(default_factory=dict)
    senders: set[str] = field(default_factory=set)
    # Credits are lossless: one per gift, event id -> diamonds.
    credits: dict[str, int] = field(default_factory=dict)
    total: int = 0

    @property
    def gifts(self) -> int:
        return sum(self.streaks.values())


async def _listen(client: Client, seen: Seen, done: Callable[[Seen], bool]) -> None:
    async for event in client.events():
        if isinstance(event, GiftEvent):
            seen.senders.add(event.sender)
            if event.streak is None:
                seen.streaks[event.event] = event.count
            else:
                repeat = max(seen.streaks.get(event.streak.id, 0), event.streak.repeat)
                seen.streaks[event.streak.id] = repeat
        elif isinstance(event, StreakEnded):
            seen.streaks[event.streak] = max(seen.streaks.get(event.streak, 0), event.repeat)
        elif isinstance(event, CreditEvent):
            seen.credits[event.event] = event.diamonds
            seen.total = max(seen.total, event.total)
        if done(seen):
            return


@dataclass
class Outcome:
    acked: set[str]
    host_seen: Seen
    watcher_seen: Seen


async def _gift_across(
    node_a: str,
    node_b: str,
    room: str,
    host: User,
    watcher: User,
    viewers: list[User],
    gifts: int,
    timeout_s: float,
) -> Outcome:
    expected = len(viewers) * gifts
    host_seen, watcher_seen = Seen(), Seen()
    async with (
        Client(ws_url(node_a), host.token) as host_client,
        Client(ws_url(node_a), watcher.token) as watcher_client,
    ):
        for client in (host_client, watcher_client):
            await client.join(room)
        listeners = [
            asyncio.create_task(
                _listen(host_client, host_seen, lambda s: len(s.credits) >= expected)
            ),
            asyncio.create_task(
                _listen(watcher_client, watcher_seen, lambda s: s.gifts >= expected)
            ),
        ]
        senders = [Client(ws_url(node_b), v.token, receive_events=False) for v in viewers]
        acked: set[str] = set()
        try:
            for sender in senders:
                await sender.connect()
                await sender.join(room)

            async def send_all(sender: Client) -> None:
                for _ in range(gifts):
                    ack = await sender.send_gift(room, GIFT)
                    acked.add(ack.event)

            await asyncio.wait_for(asyncio.gather(*(send_all(s) for s in senders)), timeout_s)
            # Every credit, and each streak's last frame (at the latest when it ends, after
            # streak_timeout_ms of quiet): what node A's clients got is reported either way.
            await asyncio.wait(listeners, timeout=timeout_s)
        finally:
            for task in listeners:
                task.cancel()
            for sender in senders:
                await sender.close()
    return Outcome(acked, host_seen, watcher_seen)


def load(node_a: str, node_b: str, viewers: int, gifts: int) -> int:
    """A host and a watching viewer on node A; `viewers` viewers on node B each send `gifts`
    gifts. Checks that node A's clients receive every gift sent through node B, and that the
    wallets agree when read through the other node."""
    host = dev_user(node_a, "scale-out host", "host", 0)
    room: str = _post(node_a, "/v1/rooms", {}, host.token)["room"]
    watcher = dev_user(node_a, "viewer on A", "viewer", 0)
    senders = [dev_user(node_b, f"viewer {i} on B", "viewer", START_COINS) for i in range(viewers)]
    print(f"room {room}: its host and 1 viewer on node A ({node_a})")
    print(f"         {viewers} viewers on node B ({node_b}), {gifts} x {GIFT} each")

    outcome = asyncio.run(
        _gift_across(node_a, node_b, room, host, watcher, senders, gifts, LOAD_TIMEOUT_S)
    )
    expected = viewers * gifts
    diamonds = sum(outcome.host_seen.credits.values())
    host_wallet = _get(node_b, "/v1/wallet", host.token)
    sender_wallets = [_get(node_a, "/v1/wallet", s.token)["coins"] for s in senders]
    print(f"gifts sent through node B: {expected}, acked: {len(outcome.acked)}")
    print(f"credits to the host on node A: {len(outcome.host_seen.credits)} ({diamonds} diamonds)")
    watched = outcome.watcher_seen
    print(
        f"gifts seen by the viewer on node A: {watched.gifts}"
        f" (from {len(watched.senders)} senders, in {len(watched.streaks)} streaks)"
    )
    print(f"the host's diamonds read through node B: {host_wallet['diamonds']}")
    print(f"the senders' coins read through node A: {sorted(set(sender_wallets))}")

    problems = []
    if len(outcome.acked) != expected:
        problems.append(f"{len(outcome.acked)} gifts acked, {expected} sent")
    if set(outcome.host_seen.credits) != outcome.acked:
        problems.append("the host's credits on node A are not the gifts acked on node B")
    if watched.gifts != expected or watched.senders != {v.user for v in senders}:
        problems.append("the viewer on node A did not see every gift sent on node B")
    if host_wallet["diamonds"] != diamonds or outcome.host_seen.total != diamonds:
        problems.append(f"diamonds: {host_wallet['diamonds']} held, {diamonds} credited")
    if sender_wallets != [START_COINS - gifts] * viewers:
        problems.append(f"coins after {gifts} gifts of 1 coin: {sender_wallets}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("room spans 2 nodes: every gift sent on node B reached node A, once")
    return 0


# -- the command line ---------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scaleout_demo.py", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    ports = commands.add_parser("ports", help="print N free loopback ports")
    ports.add_argument("count", type=int)
    wait_valkey = commands.add_parser("wait-valkey", help="wait until a Valkey answers PING")
    wait_valkey.add_argument("port", type=int)
    wait_ready = commands.add_parser("wait-ready", help="wait until every node's /readyz is 200")
    wait_ready.add_argument("urls", nargs="+")
    for waiting in (wait_valkey, wait_ready):
        waiting.add_argument("--pid", type=int, action="append", default=[])
        waiting.add_argument("--timeout", type=float, default=WAIT_TIMEOUT_S)
    spread = commands.add_parser("spread", help="keys on each node of a cluster URL")
    spread.add_argument("url")
    demo = commands.add_parser("load", help="one room across two nodes")
    demo.add_argument("node_a")
    demo.add_argument("node_b")
    demo.add_argument("--viewers", type=_positive, default=6)
    demo.add_argument("--gifts", type=_positive, default=5)
    args = p.parse_args(argv)
    try:
        if args.command == "ports":
            print(" ".join(str(port) for port in free_ports(args.count)))
        elif args.command == "wait-valkey":
            wait_until(
                partial(valkey_answers, args.port), f"Valkey on {args.port}", args.pid, args.timeout
            )
        elif args.command == "wait-ready":
            for url in args.urls:
                wait_until(partial(ready, url), f"{url}/readyz", args.pid, args.timeout)
        elif args.command == "spread":
            counts = keys_per_node(args.url)
            listed = ", ".join(f"{node}: {n}" for node, n in counts.items())
            print(f"keys on each primary: {listed}")
        else:
            return load(args.node_a, args.node_b, args.viewers, args.gifts)
    except DemoFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
