"""Every Redis key and channel name. All keys of a user share the hash tag {u:<id>}, all keys
of a room {r:<id>}, so each Function touches exactly one slot (Redis Cluster-ready)."""

PREFIX = "gs"
SECRET = f"{PREFIX}:secret"
RELAY_LOCK = f"{PREFIX}:relay:lock"
OUTBOX_PATTERN = f"{PREFIX}:{{u:*}}:outbox"
USER_ACCOUNT_PATTERN = f"{PREFIX}:{{u:*}}:acct"
ROOM_PATTERN = f"{PREFIX}:{{r:*}}"


def user_tag(user: str) -> str:
    return f"{PREFIX}:{{u:{user}}}"


def account(user: str) -> str:
    """Hash: id, name, region, role, coins, granted, spent, room (if a host)."""
    return f"{user_tag(user)}:acct"


def grants(user: str) -> str:
    """Hash: grant id -> coins granted (idempotency of grants)."""
    return f"{user_tag(user)}:grants"


def user_ledger(user: str) -> str:
    """Stream: every change of the user's coins (grant +, gift -)."""
    return f"{user_tag(user)}:ledger"


def gift_request(user: str, request_id: str) -> str:
    """String (msgpack, expiring): the stored answer to one gift request id."""
    return f"{user_tag(user)}:gift:{request_id}"


def outbox(user: str) -> str:
    """Hash: event id -> payload of a debited gift whose credit is not yet confirmed."""
    return f"{user_tag(user)}:outbox"


def streak(user: str) -> str:
    """Hash: the user's current streak (id, room, gift, repeat, last tap)."""
    return f"{user_tag(user)}:streak"


def user_from_account(key: str) -> str:
    return key[len(PREFIX) + 4 : key.index("}")]


def room_tag(room: str) -> str:
    return f"{PREFIX}:{{r:{room}}}"


def room(room_id: str) -> str:
    """Hash: host, live, epoch, offset, diamonds (the host's), carry, viewers."""
    return room_tag(room_id)


def room_credited(room_id: str) -> str:
    """Hash: event id -> 'gift offset:diamonds:total' (dedupe of credits)."""
    return f"{room_tag(room_id)}:credited"


def room_events(room_id: str) -> str:
    """Stream with ids '<offset>-0': the room's gift and credit events, for replay."""
    return f"{room_tag(room_id)}:events"


def room_ledger(room_id: str) -> str:
    """Stream: every change of the host's diamonds earned in this room."""
    return f"{room_tag(room_id)}:ledger"


def room_channel(room_id: str) -> str:
    """Sharded pub/sub channel of the room (same slot as its keys)."""
    return f"{room_tag(room_id)}:ch"


def room_from_key(key: str) -> str:
    return key[len(PREFIX) + 4 : key.index("}")]
