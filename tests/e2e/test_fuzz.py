"""A live fuzz run: random and mutated frames against a running server, over both subprotocols and
several connections at once, from a fixed seed so that a failure replays.

The fuzzer mutates valid `auth`, `join`, `leave`, `gift`, `ping` and `claim` frames (wrong types,
huge numbers, deep nesting, invalid UTF-8, truncated msgpack, extension types, non-string keys,
unexpected fields, random bytes, wrong frame kinds, oversized frames) and decides, for each frame
and independently of the server's code, what the protocol requires:

- larger than `max_frame_bytes` → close 1009; a text frame on msgpack or binary on JSON → 1003;
  not decodable by a standard msgpack or JSON reader (or not UTF-8 text) → 1007; the fuzzer then
  reconnects (`auth`, `join`) and goes on;
- anything else → exactly one answer (a result or an `error`, never `internal`) naming the
  frame's `id` when it has a usable one; a value that is not a map, or has no string `t`, is a
  `bad_frame`; an unknown `t` an `unknown_type`; an unknown field an `invalid_field`.

It keeps a model of the money: each fuzzing viewer's coins and the host's diamonds change exactly
by the gifts acked, every acked gift is in the viewer's ledger (and nothing else is), and
`giftstream audit` is clean at the end. The counts go to a JSON file in the test's tmp dir.
"""

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from giftstream.domain.catalog import load_catalog
from giftstream.store import keys
from giftstream.store.connection import connect, read_stream
from giftstream.store.embedded import EmbeddedValkey
from support import Client, Frame, ServerProcess, User, audit, serving

SEED = 20_261_122
SHORT_FRAMES = 10_000
LONG_FRAMES = 100_000
# Connections fuzzing at once: half msgpack, half JSON; each is its own viewer.
CONNECTIONS = 6
MAX_FRAME_BYTES = 65_536  # the default max_frame_bytes
VIEWER_COINS = 500_000
ANSWER_WAIT_S = 2.0
# After ANSWER_WAIT_S without an answer, a ping fence: if even it is not answered in this long,
# the connection is hung.
FENCE_WAIT_S = 3.0
CLOSE_WAIT_S = 10.0
SETUP_ATTEMPTS = 5

# The requests of the protocol and the fields each defines (docs/protocol.md).
REQUEST_FIELDS: dict[str, frozenset[str]] = {
    "auth": frozenset({"t", "id", "token", "extras"}),
    "join": frozenset({"t", "id", "room", "since"}),
    "leave": frozenset({"t", "id", "room"}),
    "gift": frozenset({"t", "id", "room", "gift", "count"}),
    "ping": frozenset({"t", "id"}),
    "drop_chest": frozenset({"t", "id", "room", "coins"}),
    "claim": frozenset({"t", "id", "room", "chest"}),
}
# The answer each request gets when it succeeds (or else an `error`).
RESULT_OF = {
    "auth": "welcome",
    "join": "joined",
    "leave": "left",
    "gift": "ack",
    "ping": "pong",
    "drop_chest": "dropped",
    "claim": "claimed",
}
ANSWER_TYPES = frozenset({*RESULT_OF.values(), "error"})
GIFTS = ["rose", "finger_heart", "confetti", "gg", "hand_hearts"]
# What a mutation puts in `t` (not `drop_chest`: a valid one would spend coins on a chest).
RETYPES: list[Any] = ["auth", "join", "leave", "gift", "ping", "claim", "welcome", "ack", ""]
RETYPES += ["GIFT", "gift\x00", "x" * 100, 7, None, True, ["gift"], {"t": "gift"}]


class Undecodable(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise Undecodable(name)


def oracle(data: bytes, text: bool, json_mode: bool) -> tuple[int | None, Any]:
    """What the protocol requires for one frame: (close code, None), or (None, the value the
    server reads from it). Decided by a standard reader, not by the server's code."""
    if len(data) > MAX_FRAME_BYTES:
        return 1009, None
    source = ""
    if text:
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            return 1007, None
    if text != json_mode:
        return 1003, None
    try:
        if json_mode:
            return None, json.loads(source, parse_constant=_refuse_constant)
        return None, msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (Exception, RecursionError):
        return 1007, None


def expected_error(value: Any) -> str | None:
    """The error code the protocol requires for a decoded value, when its shape decides it."""
    if not isinstance(value, dict):
        return "bad_frame"
    kind = value.get("t")
    if not isinstance(kind, str):
        return "bad_frame"
    allowed = REQUEST_FIELDS.get(kind)
    if allowed is None:
        return "unknown_type"
    if any(not isinstance(k, str) or k not in allowed for k in value):
        return "invalid_field"
    return None


def usable_id(value: Any) -> str | None:
    """The `id` an answer must repeat: a string of 1 to 64 printable characters."""
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, str) and 0 < len(rid) <= 64 and rid.isprintable():
            return rid
    return None


# -- the generator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Bytes put into an encoded frame as they are, where the encoder would refuse them."""

    data: bytes


@dataclass(frozen=True)
class Shot:
    label: str
    data: bytes
    text: bool


@dataclass(frozen=True)
class Scene:
    room: str
    epoch: str
    host: User


def mp_str_header(length: int) -> bytes:
    if length < 32:
        return bytes([0xA0 | length])
    if length < 256:
        return b"\xd9" + bytes([length])
    return b"\xda" + length.to_bytes(2, "big")


def mp_nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\x01"


class Generator:
    """Frames for one connection, from its own seeded random source."""

    def __init__(self, rng: random.Random, json_mode: bool, scene: Scene, viewer: User) -> None:
        self.rng = rng
        self.json_mode = json_mode
        self.scene = scene
        self.viewer = viewer
        self.serial = 0
        self.sent_gifts: list[dict[str, Any]] = []
        self._placeholders = 0

    # valid frames

    def new_id(self) -> str:
        self.serial += 1
        return f"fz{self.serial}"

    def valid(self) -> dict[str, Any]:
        rng, room = self.rng, self.scene.room
        kind = rng.choices(
            ["gift", "ping", "join", "leave", "auth", "claim"], [45, 15, 17, 5, 12, 6]
        )[0]
        frame: dict[str, Any] = {"t": kind}
        if kind == "gift":
            frame.update(id=self.new_id(), room=room, gift=rng.choice(GIFTS))
            if rng.random() < 0.7:
                frame["count"] = rng.choice([1, 1, 1, 2, 3, 5, 10, 99, 10_000])
            self.sent_gifts.append(frame)
        elif kind == "join":
            frame["room"] = room
            if rng.random() < 0.3:
                offset = 0 if rng.random() < 0.1 else rng.randrange(10**6, 2**53)
                frame["since"] = {"epoch": self.scene.epoch, "offset": offset}
        elif kind == "leave":
            frame["room"] = room
        elif kind == "auth":
            frame["token"] = self.viewer.token
            if rng.random() < 0.3:
                frame["extras"] = rng.random() < 0.5
        elif kind == "claim":
            frame.update(room=room, chest=f"c{rng.randrange(1000)}")
        if kind != "gift" and rng.random() < 0.5:
            frame["id"] = self.new_id()
        return frame

    # hostile values

    def hostile(self) -> Any:
        rng = self.rng
        pick = rng.random()
        if pick < 0.28:
            return rng.choice(self._numbers())
        if pick < 0.56:
            return rng.choice(self._strings())
        if pick < 0.68:
            return rng.choice([None, True, False, 0.5, 1.0, -0.0, 1e308, float("-inf")])
        if pick < 0.86:
            return self._container()
        if pick < 0.93:
            return self._deep()
        return self._format_specific()

    def _numbers(self) -> list[Any]:
        edge: list[Any] = [
            0,
            -1,
            1,
            2,
            10_000,
            10_001,
            2**31,
            2**53,
            2**53 + 1,
            2**63 - 1,
            -(2**63),
        ]
        edge += [2**64 - 1, self.rng.randrange(-(2**63), 2**63)]
        if self.json_mode:
            # Beyond 64 bits: JSON carries them; past 4,300 digits Python cannot read them.
            edge += [10**30, -(10**30), Raw(b"9" * 4_000), Raw(b"1e400")]
            if self.rng.random() < 0.3:
                edge.append(Raw(b"9" * 5_000))
        return edge

    def _strings(self) -> list[Any]:
        strings: list[Any] = ["", " ", "x" * 65, "r" * 64, "t" * 1025, "a\x00b", "a\nb", "\t"]
        strings += ["null", "1", "gift", "rose", self.scene.room, self.viewer.user]
        strings += [self.scene.host.user, "v1.abc.def", self.viewer.token + "x"]
        strings += [self._unicode(), self._unicode()]
        return strings

    def _unicode(self) -> str:
        """Text beyond ASCII: accents, emoji, invisible and bidi characters, random code
        points, and (on JSON, which can escape them) lone surrogates, which are not text."""
        rng = self.rng
        choices = ["é", "\U0001f339" * 20, "\u200b", "\u202e", "\ufeff", "v1.x.é", "v1.é.x"]
        choices.append(
            "".join(chr(rng.randrange(0xA0, 0x2FFF)) for _ in range(rng.randrange(1, 9)))
        )
        if self.json_mode:
            lone = chr(rng.randrange(0xD800, 0xE000))
            choices.append(rng.choice([lone, f"v1.{lone}.x", "id-" + lone]))
        return rng.choice(choices)

    def _container(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                [],
                {},
                [1, [2, [3]]],
                {"a": {"b": {"c": 1}}},
                {"epoch": self.scene.epoch, "offset": rng.choice([-1, 0, 2**53, "1"])},
                [0] * rng.randrange(100, 3000),
                {str(i): i for i in range(rng.randrange(10, 300))},
                [self.valid()],
            ]
        )

    def _deep(self) -> Any:
        """Nesting a reader accepts (decodes, then is refused) or refuses (closes with 1007)."""
        rng = self.rng
        depth = rng.choice([5, 50, 200, 300]) if rng.random() < 0.8 else rng.choice([2_500, 20_000])
        if self.json_mode:
            return Raw(b"[" * depth + b"1" + b"]" * depth)
        return Raw(mp_nested(depth))

    def _format_specific(self) -> Any:
        rng = self.rng
        if self.json_mode:
            return rng.choice([Raw(b"NaN"), Raw(b"-Infinity"), Raw(b"1E999999"), 3.5])
        invalid_utf8 = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"a\x80b"])
        ext_code = rng.randrange(0, 128)
        return rng.choice(
            [
                b"",
                b"\xff\x00rose",
                msgpack.ExtType(ext_code, rng.randbytes(rng.randrange(0, 20))),
                msgpack.Timestamp(rng.randrange(0, 2**34), rng.randrange(0, 10**9)),
                Raw(mp_str_header(len(invalid_utf8)) + invalid_utf8),
                Raw(b"\xd4\x85\x00"),  # a reserved negative extension type
                Raw(b"\xd6\xff\x00\x00"),  # a timestamp too short
            ]
        )

    def odd_key(self) -> Any:
        rng = self.rng
        keys_ = ["from", "amount", "Count", "", "x" * 100, "t\x00", "ID", "since", "token"]
        keys_ += ["extras", "coins", "chest", "room", "count"]
        if not self.json_mode and rng.random() < 0.4:
            return rng.choice([1, -1, 2**64 - 1, b"t", None, True, 1.5, msgpack.ExtType(1, b"k")])
        return rng.choice(keys_)

    # mutations

    def mutate(self, frame: dict[str, Any]) -> Any:
        rng = self.rng
        value: Any = dict(frame)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if not isinstance(value, dict):
                break
            ops = ["set", "drop", "add", "retype", "wrap", "id", "token"]
            weights = [38, 12, 18, 12, 6, 10, 40 if value.get("t") == "auth" else 0]
            op = rng.choices(ops, weights)[0]
            if op == "set":
                name = rng.choice([*value, "t", "id", "room", "gift", "count", "token"])
                value[name] = self.hostile()
            elif op == "drop" and value:
                del value[rng.choice(list(value))]
            elif op == "add":
                value[self.odd_key()] = self.hostile()
            elif op == "retype":
                value["t"] = rng.choice(RETYPES)
            elif op == "wrap":
                value = rng.choice([[value], {"frame": value}, self.hostile()])
            elif op == "id":
                earlier = rng.choice(self.sent_gifts) if self.sent_gifts else {"id": "none"}
                value["id"] = rng.choice(
                    [earlier["id"], "", "x" * 65, "a\x1fb", 12, None, self._unicode()]
                )
            elif op == "token":
                token = self.viewer.token
                cut = rng.randrange(len(token))
                value["token"] = rng.choice(
                    [
                        token[:cut],
                        token[:cut] + chr(rng.randrange(0x21, 0x2FFF)) + token[cut + 1 :],
                        token + "." + token,
                        "v1." + "A" * 2000 + ".x",
                        self._unicode(),
                    ]
                )
        return value

    def replay(self) -> dict[str, Any]:
        """An earlier gift again: the same content (answered with its first answer) or another
        content under the same id (a conflict when the first was charged)."""
        if not self.sent_gifts:
            return self.valid()
        frame = dict(self.rng.choice(self.sent_gifts))
        if self.rng.random() < 0.4:
            frame["count"] = frame.get("count", 1) + 1
        return frame

    # encoding

    def encode(self, value: Any) -> bytes:
        raws: dict[str, bytes] = {}

        def swap(v: Any) -> Any:
            if isinstance(v, Raw):
                self._placeholders += 1
                marker = f"\x01raw{self._placeholders}\x01"
                raws[marker] = v.data
                return marker
            if isinstance(v, dict):
                return {swap(k) if isinstance(k, Raw) else k: swap(x) for k, x in v.items()}
            if isinstance(v, list):
                return [swap(x) for x in v]
            return v

        plain = swap(value)
        if self.json_mode:
            ascii_only = self.rng.random() < 0.5
            try:
                data = json.dumps(plain, ensure_ascii=ascii_only).encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
                data = json.dumps(plain).encode("utf-8")
            for marker, raw in raws.items():
                data = data.replace(json.dumps(marker).encode(), raw, 1)
        else:
            data = msgpack.packb(plain, use_bin_type=True, datetime=False)
            for marker, raw in raws.items():
                data = data.replace(msgpack.packb(marker), raw, 1)
        return data

    def corrupt(self, data: bytes) -> tuple[bytes, str]:
        rng = self.rng
        how = rng.choice(["truncate", "flip", "insert", "append", "utf8"])
        if how == "truncate" and data:
            return data[: rng.randrange(len(data))], how
        if how == "flip" and data:
            out = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                out[rng.randrange(len(out))] = rng.randrange(256)
            return bytes(out), how
        if how == "insert":
            at = rng.randrange(len(data) + 1)
            return data[:at] + rng.randbytes(rng.randrange(1, 8)) + data[at:], how
        if how == "utf8" and self.json_mode:
            at = rng.randrange(len(data) + 1)
            bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
            return data[:at] + bad + data[at:], how
        return data + rng.randbytes(rng.randrange(1, 8)), "append"

    def shot(self) -> Shot:
        rng, text = self.rng, self.json_mode
        pick = rng.random()
        if pick < 0.15:
            return Shot("valid", self.encode(self.valid()), text)
        if pick < 0.75:
            return Shot("mutated", self.encode(self.mutate(self.valid())), text)
        if pick < 0.80:
            return Shot("replayed-gift", self.encode(self.replay()), text)
        if pick < 0.87:
            return Shot("hostile-value", self.encode(self.hostile()), text)
        if pick < 0.92:
            data, how = self.corrupt(self.encode(rng.choice([self.valid, self._mutated])()))
            return Shot(f"corrupt-{how}", data, text)
        if pick < 0.97:
            return self._random()
        if pick < 0.985:
            # The other frame kind: a text frame on msgpack, a binary frame on JSON.
            if self.json_mode:
                return Shot("wrong-kind", msgpack.packb(self.valid()), False)
            return Shot("wrong-kind", json.dumps(self.valid()).encode(), True)
        return self._oversized()

    def _mutated(self) -> Any:
        return self.mutate(self.valid())

    def _random(self) -> Shot:
        rng = self.rng
        if not self.json_mode:
            return Shot("random-bytes", rng.randbytes(rng.randrange(0, 200)), False)
        pick = rng.random()
        if pick < 0.4:
            alphabet = '{}[]:,"0123456789.eE+-tfnrulaxs \\'
            junk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
            return Shot("random-text", junk.encode(), True)
        if pick < 0.7:
            return Shot("random-json", self.encode(self.hostile()), True)
        return Shot("random-bytes-as-text", rng.randbytes(rng.randrange(1, 100)), True)

    def _oversized(self) -> Shot:
        rng = self.rng
        size = MAX_FRAME_BYTES + rng.randrange(1, 100_000)
        if rng.random() < 0.5:
            return Shot("oversized-random", rng.randbytes(size), self.json_mode)
        frame = {**self.valid(), "pad": "x" * size}
        return Shot("oversized-frame", self.encode(frame), self.json_mode)


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


# -- the test --------------------------------------------------------------------------------


async def ledger_gift_events(url: str, user: User) -> list[str]:
    redis = connect(url)
    try:
        entries = await read_stream(redis, keys.user_ledger(user.user))
    finally:
        await redis.aclose()
    return [e[b"ref"].decode() for _, e in entries if e.get(b"kind") == b"gift"]


async def fuzz(valkey: EmbeddedValkey, tmp_path: Path, frames: int) -> None:
    """Fuzz a server of its own with `frames` frames; check it and its money after."""
    server = ServerProcess(valkey.url)
    async with serving(server) as (server, api):
        host = await api.user(role="host")
        room = await api.open_room(host)
        epoch = await room_epoch(server, host, room)
        scene = Scene(room, epoch, host)
        prices = {g["id"]: g["coins"] for g in (await api.http.get("/v1/gifts")).json()}
        viewers = [await api.user(coins=VIEWER_COINS) for _ in range(CONNECTIONS)]
        stats = Stats()
        fuzzers = [Fuzzer(i, server, scene, v, prices, stats) for i, v in enumerate(viewers)]
        started = time.monotonic()
        each = -(-frames // CONNECTIONS)  # at least `frames` in all
        await asyncio.gather(*(f.run(each) for f in fuzzers))
        elapsed = time.monotonic() - started

        figures = {**stats.figures(), "seconds": round(elapsed, 1)}
        report = tmp_path / "fuzz.json"
        report.write_text(json.dumps(figures, indent=2))
        print(
            f"\nfuzz: seed {SEED}, {stats.frames} frames in {elapsed:.1f} s:"
            f" {stats.answered}/{stats.decodable} decodable answered,"
            f" closes {dict(sorted(stats.closes.items()))}, {stats.reconnects} reconnects,"
            f" {stats.acked_gifts} gifts acked ({stats.coins_spent} coins),"
            f" {len(stats.failures)} failures; figures in {report}"
        )

        # The server is up, and serves a newcomer.
        assert (await api.http.get("/healthz")).status_code == 200
        ready = await api.http.get("/readyz")
        assert ready.status_code == 200, ready.text

        # Money moved only by acked gifts.
        for fuzzer in fuzzers:
            wallet = await api.wallet(fuzzer.viewer)
            assert wallet["coins"] == fuzzer.wallet.coins, (fuzzer.name, wallet)
            events = await ledger_gift_events(valkey.url, fuzzer.viewer)
            acked = sorted(event for event, _, _ in fuzzer.wallet.acked.values())
            assert sorted(events) == acked, fuzzer.name
        rate = load_catalog(None).rate
        diamonds = stats.coins_spent * rate.numerator // rate.denominator
        assert (await api.wallet(host))["diamonds"] == diamonds

        newcomer = await api.user(coins=10)
        client = await Client.open(server.ws_url)
        try:
            await client.auth(newcomer)
            await client.join(room)
            ack = await client.gift(room, "rose", "after-the-fuzz")
            assert ack["t"] == "ack" and ack["coins"] == 9, ack
        finally:
            await client.close()

    code, report_text = await audit(valkey.url)
    assert code == 0 and "audit clean" in report_text, report_text
    assert stats.frames >= frames
    shown = "\n".join(stats.failures[:40])
    assert not stats.failures, f"{len(stats.failures)} failures, the first ones:\n{shown}"
    assert stats.answered == stats.decodable


async def room_epoch(server: ServerProcess, host: User, room: str) -> str:
    client = await Client.open(server.ws_url)
    try:
        await client.auth(host)
        joined = await client.join(room)
    finally:
        await client.close()
    epoch: str = joined["epoch"]
    return epoch


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> None:
    """Long runs only when asked for: `pytest -m slow`."""
    if "slow" not in str(request.config.getoption("markexpr", "")):
        pytest.skip("a long run: select it with -m slow")


async def test_10000_fuzzed_frames_are_each_answered_or_closed_and_move_no_money_but_acked_gifts(
    fresh_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    await fuzz(fresh_valkey, tmp_path, SHORT_FRAMES)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_100000_fuzzed_frames_are_each_answered_or_closed_and_move_no_money_but_acked_gifts(
    long_run: None, fresh_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    await fuzz(fresh_valkey, tmp_path, LONG_FRAMES)


ORACLE_CASES: list[tuple[bytes, bool, bool, int | None]] = [
    (b"\x81\xa1t\xa4ping", False, False, None),
    (b'{"t":"ping"}', True, True, None),
    (b'{"t":"ping"}', True, False, 1003),
    (b"\x81\xa1t\xa4ping", False, True, 1003),
    (b"\xc1", False, False, 1007),
    (b'{"t":NaN}', True, True, 1007),
    (b'{"t":"\xff"}', True, True, 1007),
    (b"x" * (MAX_FRAME_BYTES + 1), False, False, 1009),
]


@pytest.mark.parametrize(("data", "text", "json_mode", "close"), ORACLE_CASES)
def test_the_fuzzers_oracle_follows_the_close_code_table(
    data: bytes, text: bool, json_mode: bool, close: int | None
) -> None:
    assert oracle(data, text, json_mode)[0] == close


def test_the_fuzzer_is_deterministic_for_a_seed() -> None:
    scene = Scene("r1", "e1", User("h", "tok-h"))

    def frames(seed: str, json_mode: bool) -> list[Shot]:
        gen = Generator(random.Random(seed), json_mode, scene, User("v", "tok-v"))
        return [gen.shot() for _ in range(300)]

    for json_mode in (False, True):
        assert frames("a", json_mode) == frames("a", json_mode)
        assert frames("a", json_mode) != frames("b", json_mode)
