"""Client requests: typed, and validated strictly from decoded frames.

`parse_request` turns any decoded value into one request or raises the error that answers it.
Validation never trusts a type: booleans are not integers, floats are not integers, and a field
the request does not define is refused, so a typo is never silently ignored.
"""

from dataclasses import dataclass
from typing import Any

from giftstream.errors import BadFrame, InvalidField, UnknownType
from giftstream.wire import fields

MAX_ID_LENGTH = fields.MAX_ID_LENGTH
MAX_TOKEN_LENGTH = 1024
MAX_GIFT_COUNT = 10_000
MAX_CHEST_COINS = 1_000_000
MAX_OFFSET = 2**53 - 1
# A battle has 2 to 4 sides: the inviter's room and 1 to 3 invited ones.
MAX_INVITED_ROOMS = 3
MAX_BATTLE_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Since:
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    id: str | None = None
    # Opt in to the room frames added to protocol v1 (presence, viewers, leaderboard, room,
    # session_summary, broadcast) and to `batch` frames.
    extras: bool = False


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: Since | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SendGift:
    id: str
    room: str
    gift: str
    count: int = 1

    @property
    def fingerprint(self) -> str:
        """What must match for a re-sent `id` to be the same request."""
        return f"{self.room}\x1f{self.gift}\x1f{self.count}"


@dataclass(frozen=True, slots=True)
class DropChest:
    id: str
    room: str
    coins: int


@dataclass(frozen=True, slots=True)
class Claim:
    room: str
    chest: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class BattleInvite:
    rooms: tuple[str, ...]
    duration_s: int | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class BattleAction:
    """battle_accept, battle_decline or battle_end (early, by one of its hosts)."""

    action: str
    battle: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | None = None


Request = Auth | Join | Leave | SendGift | DropChest | Claim | BattleInvite | BattleAction | Ping
BATTLE_ACTIONS = frozenset({"battle_accept", "battle_decline", "battle_end"})

_FIELDS: dict[str, frozenset[str]] = {
    "auth": frozenset({"t", "id", "token", "extras"}),
    "join": frozenset({"t", "id", "room", "since"}),
    "leave": frozenset({"t", "id", "room"}),
    "gift": frozenset({"t", "id", "room", "gift", "count"}),
    "drop_chest": frozenset({"t", "id", "room", "coins"}),
    "claim": frozenset({"t", "id", "room", "chest"}),
    "battle_invite": frozenset({"t", "id", "rooms", "duration_s"}),
    **{action: frozenset({"t", "id", "battle"}) for action in BATTLE_ACTIONS},
    "ping": frozenset({"t", "id"}),
}
REQUEST_TYPES = frozenset(_FIELDS)


def request_id(frame: Any) -> str | None:
    """The frame's `id` when it is a usable string, so that an error can name its request."""
    if isinstance(frame, dict):
        value = frame.get("id")
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable():
            return value
    return None


def _string(frame: dict[str, Any], name: str, max_length: int, *, required: bool = True) -> Any:
    if name not in frame:
        if required:
            raise InvalidField(f"the field '{name}' is required")
        return None
    return fields.text(frame[name], name, max_length)


def _id(frame: dict[str, Any], name: str) -> str:
    if name not in frame:
        raise InvalidField(f"the field '{name}' is required")
    return fields.ident(frame[name], name)


def _integer(frame: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    if name not in frame:
        return default
    return fields.integer(frame[name], name, low, high)


def _since(frame: dict[str, Any]) -> Since | None:
    value = frame.get("since")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidField("the field 'since' must be a map {epoch, offset}")
    unknown = set(value) - {"epoch", "offset"}
    if unknown:
        names = ", ".join(sorted(fields.quoted(repr(k)) for k in unknown))
        raise InvalidField(f"'since' has unknown fields: {names}")
    epoch = _string(value, "epoch", MAX_ID_LENGTH)
    if "offset" not in value:
        raise InvalidField("the field 'offset' of 'since' is required")
    offset = _integer(value, "offset", 0, MAX_OFFSET, 0)
    return Since(epoch=epoch, offset=offset)


def battle_invite(frame: dict[str, Any], ident: str | None = None) -> BattleInvite:
    """The fields of an invite (a `battle_invite` frame, or the body of POST /v1/battles)."""
    rooms = frame.get("rooms")
    if not isinstance(rooms, list) or not 1 <= len(rooms) <= MAX_INVITED_ROOMS:
        raise InvalidField(
            f"'rooms' must be a list of 1 to {MAX_INVITED_ROOMS} room ids: a battle has 2 to"
            f" {MAX_INVITED_ROOMS + 1} sides"
        )
    duration = None
    if "duration_s" in frame:
        duration = fields.integer(frame["duration_s"], "duration_s", 1, MAX_BATTLE_S)
    return BattleInvite(
        rooms=tuple(fields.ident(room, "rooms") for room in rooms), duration_s=duration, id=ident
    )


def parse_request(frame: Any) -> Request:
    """Validate one decoded frame. Raises BadFrame, UnknownType or InvalidField."""
    if not isinstance(frame, dict):
        raise BadFrame("a frame must be a map with a field 't'")
    kind = frame.get("t")
    if not isinstance(kind, str):
        raise BadFrame("a frame needs a string field 't' naming its type")
    allowed = _FIELDS.get(kind)
    if allowed is None:
        raise UnknownType(f"unknown frame type '{fields.quoted(kind)}'")
    unknown = [k for k in frame if k not in allowed]
    if unknown:
        names = ", ".join(sorted(fields.quoted(repr(k)) for k in unknown))
        raise InvalidField(f"unknown fields for '{kind}': {names}")
    ident = _string(frame, "id", MAX_ID_LENGTH, required=kind in ("gift", "drop_chest"))
    if kind == "auth":
        extras = frame.get("extras", False)
        if not isinstance(extras, bool):
            raise InvalidField("the field 'extras' must be true or false")
        return Auth(token=_string(frame, "token", MAX_TOKEN_LENGTH), id=ident, extras=extras)
    if kind == "join":
        return Join(room=_id(frame, "room"), since=_since(frame), id=ident)
    if kind == "leave":
        return Leave(room=_id(frame, "room"), id=ident)
    if kind == "gift":
        return SendGift(
            id=ident,
            room=_id(frame, "room"),
            gift=_string(frame, "gift", MAX_ID_LENGTH),
            count=_integer(frame, "count", 1, MAX_GIFT_COUNT, 1),
        )
    if kind == "drop_chest":
        if "coins" not in frame:
            raise InvalidField("the field 'coins' is required")
        return DropChest(
            id=ident,
            room=_id(frame, "room"),
            coins=_integer(frame, "coins", 1, MAX_CHEST_COINS, 1),
        )
    if kind == "claim":
        return Claim(
            room=_id(frame, "room"),
            chest=_id(frame, "chest"),
            id=ident,
        )
    if kind == "battle_invite":
        return battle_invite(frame, ident)
    if kind in BATTLE_ACTIONS:
        return BattleAction(action=kind, battle=_id(frame, "battle"), id=ident)
    return Ping(id=ident)
