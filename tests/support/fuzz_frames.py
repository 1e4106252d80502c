"""The fuzz run's frames: valid `auth`, `join`, `leave`, `gift`, `ping` and `claim` frames, and
their mutations (wrong types, huge numbers, deep nesting, invalid UTF-8, truncated msgpack,
extension types, non-string keys, unexpected fields, random bytes, wrong frame kinds, oversized
frames), from a seeded random generator so that a failure replays.

One module for the one `Generator`: each mutation is a short method of it.
"""

import json
import random
from dataclasses import dataclass
from typing import Any

import msgpack

from .fuzz_oracle import GIFTS, MAX_FRAME_BYTES, RETYPES
from .users import User

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
