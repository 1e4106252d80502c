"""The fuzz run's connections: each sends frames from its generator, checks every answer or close
against the oracle, reconnects (`auth`, `join`) after a close and goes on, and keeps a model of
its viewer's money: the coins change exactly by the gifts acked.
"""

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from .frames import Client, Frame
from .fuzz_frames import Generator, Scene, Shot
from .fuzz_oracle import (
    ANSWER_TYPES,
    ANSWER_WAIT_S,
    CLOSE_WAIT_S,
    FENCE_WAIT_S,
    RESULT_OF,
    SEED,
    SETUP_ATTEMPTS,
    VIEWER_COINS,
    expected_error,
    oracle,
    usable_id,
)
from .servers import ServerProcess
from .users import User

# -- the run ---------------------------------------------------------------------------------


@dataclass
class Stats:
    frames: int = 0
    decodable: int = 0
    answered: int = 0
    late_answers: int = 0
    setup_frames: int = 0
    reconnects: int = 0
    acked_gifts: int = 0
    coins_spent: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def figures(self) -> dict[str, Any]:
        return {
            "seed": SEED,
            "frames": self.frames,
            "decodable": self.decodable,
            "answered": self.answered,
            "late_answers": self.late_answers,
            "closes_by_code": dict(sorted(self.closes.items())),
            "reconnects": self.reconnects,
            "setup_frames": self.setup_frames,
            "acked_gifts": self.acked_gifts,
            "coins_spent": self.coins_spent,
            "frames_by_kind": dict(sorted(self.labels.items())),
            "answers_by_type": dict(sorted(self.answers.items())),
            "errors_by_code": dict(sorted(self.errors.items())),
            "failures": len(self.failures),
            "first_failures": self.failures[:40],
        }


@dataclass
class Wallet:
    """The model of one fuzzing viewer's money."""

    coins: int
    spent: int = 0
    # gift id -> (event, fingerprint, coins after it)
    acked: dict[str, tuple[str, str, int]] = field(default_factory=dict)


def preview(data: bytes) -> str:
    return repr(data[:240]) + (f"... ({len(data)} bytes)" if len(data) > 240 else "")


class Fuzzer:
    """One connection's fuzzing: send a frame, check what comes back, reconnect after a close."""

    def __init__(
        self,
        index: int,
        server: ServerProcess,
        scene: Scene,
        viewer: User,
        prices: dict[str, int],
        stats: Stats,
    ) -> None:
        self.index = index
        self.json_mode = index % 2 == 1
        self.server = server
        self.scene = scene
        self.viewer = viewer
        self.prices = prices
        self.stats = stats
        self.wallet = Wallet(VIEWER_COINS)
        self.gen = Generator(random.Random(f"{SEED}-{index}"), self.json_mode, scene, viewer)
        self.client: Client | None = None
        self.fences = 0

    @property
    def name(self) -> str:
        return f"conn {self.index} ({'json' if self.json_mode else 'msgpack'})"

    async def run(self, frames: int) -> None:
        try:
            await self.connect()
            for n in range(frames):
                await self.fire(n, self.gen.shot())
        finally:
            if self.client is not None:
                await self.client.close()

    async def connect(self) -> None:
        """A new connection, authenticated and joined (the fuzzer's own frames, not counted)."""
        last = ""
        for attempt in range(SETUP_ATTEMPTS):
            if self.client is not None:
                await self.client.close()
            try:
                self.client = await Client.open(self.server.ws_url, json_mode=self.json_mode)
                welcome = await self.setup({"t": "auth", "token": self.viewer.token}, "welcome")
                joined = await self.setup({"t": "join", "room": self.scene.room}, "joined")
            except (ConnectionClosed, OSError, TimeoutError) as e:
                await asyncio.sleep(0.05 * (attempt + 1))
                last = repr(e)
                continue
            if welcome["t"] == "welcome" and joined["t"] == "joined":
                return
            last = f"{welcome} {joined}"
            await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError(f"{self.name}: could not reconnect: {last}")

    async def setup(self, frame: Frame, result: str) -> Frame:
        assert self.client is not None
        self.stats.setup_frames += 1
        await self.client.send(frame)
        while True:
            answer = await self.client.recv_frame(CLOSE_WAIT_S)
            if answer["t"] in (result, "error"):
                return answer

    async def next_answer(self, wait_s: float) -> Frame | None:
        """The next answer frame (room frames and batches are skipped); None after `wait_s`."""
        assert self.client is not None
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                frame = await self.client.recv_frame(left)
            except TimeoutError:
                return None
            if frame.get("t") in ANSWER_TYPES:
                return frame

    async def send(self, shot: Shot) -> None:
        assert self.client is not None
        await self.client.ws.send(shot.data, text=shot.text)

    async def fire(self, n: int, shot: Shot) -> None:
        stats = self.stats
        stats.frames += 1
        stats.labels[shot.label] += 1
        close, value = oracle(shot.data, shot.text, self.json_mode)
        where = f"{self.name} frame {n} [{shot.label}] {preview(shot.data)}"
        try:
            await self.send(shot)
            if close is None:
                stats.decodable += 1
                await self.expect_answer(value, where)
            else:
                await self.expect_close(close, where)
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else 1006
            allowed = close is None and _replays_history(value) and code == 1008
            stats.closes[str(code)] += 1
            if not allowed:
                stats.fail(f"{where}: closed with {code}, expected {close or 'an answer'}")
            await self.reconnect()

    async def reconnect(self) -> None:
        self.stats.reconnects += 1
        await self.connect()

    async def expect_close(self, code: int, where: str) -> None:
        assert self.client is not None
        deadline = time.monotonic() + CLOSE_WAIT_S
        try:
            while time.monotonic() < deadline:
                frame = await self.client.recv_frame(deadline - time.monotonic())
                if frame.get("t") in ANSWER_TYPES:
                    self.stats.fail(f"{where}: answered {frame} instead of closing with {code}")
        except TimeoutError:
            pass
        except ConnectionClosed as e:
            got = e.rcvd.code if e.rcvd is not None else 1006
            self.stats.closes[str(got)] += 1
            if got != code:
                self.stats.fail(f"{where}: closed with {got}, expected {code}")
            await self.reconnect()
            return
        self.stats.fail(f"{where}: not closed within {CLOSE_WAIT_S} s (expected {code})")
        await self.reconnect()

    async def expect_answer(self, value: Any, where: str) -> None:
        answer = await self.next_answer(ANSWER_WAIT_S)
        if answer is None:
            answer = await self.fence(where)
            if answer is None:
                return
            self.stats.late_answers += 1
        self.stats.answered += 1
        self.check_answer(value, answer, where)

    async def fence(self, where: str) -> Frame | None:
        """No answer yet: send a ping and see what comes first. Returns the late answer, or
        None (recorded as a failure) when the frame is never answered."""
        assert self.client is not None
        self.fences += 1
        fence_id = f"fence-{self.index}-{self.fences}"
        await self.client.send({"t": "ping", "id": fence_id})
        late: Frame | None = None
        deadline = time.monotonic() + FENCE_WAIT_S
        while True:
            frame = await self.next_answer(deadline - time.monotonic())
            if frame is None:
                self.stats.fail(f"{where}: no answer, and no pong: the connection hangs")
                await self.client.close()
                await self.reconnect()
                return None
            if frame["t"] == "pong" and frame.get("id") == fence_id:
                break
            late = frame
        if late is None:
            self.stats.fail(f"{where}: never answered (the connection still answers pings)")
        return late

    def check_answer(self, value: Any, answer: Frame, where: str) -> None:
        stats, kind = self.stats, answer["t"]
        stats.answers[kind] += 1
        if kind == "error":
            stats.errors[str(answer.get("code"))] += 1
        rid = usable_id(value)
        if answer.get("id") != rid:
            stats.fail(f"{where}: answer {answer} does not name the frame's id {rid!r}")
            return
        required = expected_error(value)
        if required is not None:
            if kind != "error" or answer["code"] != required:
                stats.fail(f"{where}: answered {answer}, the protocol requires {required}")
            return
        if kind == "error":
            if answer["code"] == "internal":
                stats.fail(f"{where}: the server failed on a client's frame: {answer}")
            return
        if kind != RESULT_OF[value["t"]]:
            stats.fail(f"{where}: a {value['t']} answered with {answer}")
        elif kind == "ack":
            self.acked(value, answer, where)

    def acked(self, gift: dict[str, Any], ack: Frame, where: str) -> None:
        count = gift.get("count", 1)
        fingerprint = f"{gift['room']}\x1f{gift['gift']}\x1f{count}"
        wallet = self.wallet
        first = wallet.acked.get(gift["id"])
        if first is not None:
            # A retry: answered as the first time, and not charged again.
            if (ack["event"], ack["coins"]) != (first[0], first[2]) or fingerprint != first[1]:
                self.stats.fail(f"{where}: retry answered {ack}, first answer was {first}")
            return
        cost = self.prices[gift["gift"]] * count
        wallet.coins -= cost
        wallet.spent += cost
        wallet.acked[gift["id"]] = (ack["event"], fingerprint, ack["coins"])
        self.stats.acked_gifts += 1
        self.stats.coins_spent += cost
        if ack["coins"] != wallet.coins:
            self.stats.fail(f"{where}: ack {ack} but the model's balance is {wallet.coins}")


def _replays_history(value: Any) -> bool:
    """A join with `since` replays history, lossless: one too big for the send queue closes the
    connection with 1008 before its answer (the protocol's slow-consumer rule)."""
    return isinstance(value, dict) and value.get("t") == "join" and value.get("since") is not None
