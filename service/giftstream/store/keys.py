"""Every Redis key and channel name. All keys of a user share the hash tag {u:<id>}, all keys
of a room {r:<id>}, so each Function touches exactly one slot (Redis Cluster-ready)."""

import binascii
import functools

PREFIX = "gs"
# Where earlier versions kept the token secret; deleted at start-up (giftstream.keyring).
LEGACY_SECRET = f"{PREFIX}:secret"
RELAY_LOCK = f"{PREFIX}:relay:lock"
# Sorted set: live room id -> time it went live (ms). An index for listing, outside any room's
# slot, so it is kept beside the Functions rather than by them.
LIVE_ROOMS = f"{PREFIX}:rooms:live"
OUTBOX_PATTERN = f"{PREFIX}:{{u:*}}:outbox"
# String: set once every outbox written before the pending index existed has been indexed.
OUTBOX_INDEXED = f"{PREFIX}:outbox:indexed"
# Redis Cluster's hash slots.
SLOTS = 16384
USER_ACCOUNT_PATTERN = f"{PREFIX}:{{u:*}}:acct"
ROOM_PATTERN = f"{PREFIX}:{{r:*}}"


def user_tag(user: str) -> str:
    return f"{PREFIX}:{{u:{user}}}"


def account(user: str) -> str:
    """Hash: id, name, region, role, age, coins, points, granted, purchased, spent, refunded,
    daily_cap, guardian (hash of the guardian's code), flags, room (if a host)."""
    return f"{user_tag(user)}:acct"


def records(user: str) -> str:
    """Hash: reference -> record of each grant, purchase, points grant and exchange (the
    idempotency of everything that adds coins or points)."""
    return f"{user_tag(user)}:records"


def gift_bucket(user: str) -> str:
    """Hash: tokens, at — the user's gift rate limit (a token bucket)."""
    return f"{user_tag(user)}:bucket"


def daily(user: str) -> str:
    """Hash: day (UTC, days since 1970) and coins spent on gifts that day."""
    return f"{user_tag(user)}:daily"


def user_ledger(user: str) -> str:
    """Stream: every change of the user's coins (grant +, gift -)."""
    return f"{user_tag(user)}:ledger"


def gift_request(user: str, request_id: str) -> str:
    """String (msgpack [fingerprint hash, event, balance], expiring): the stored answer to one
    gift request id, deleted by the archiver once archived and past the hot window."""
    return f"{user_tag(user)}:gift:{request_id}"


def gift_filters(user: str) -> list[str]:
    """Strings (bitmaps, expiring): the two generations of the filter of the user's gift request
    ids (functions/gifts.lua)."""
    tag = user_tag(user)
    return [f"{tag}:seen:0", f"{tag}:seen:1"]


def outbox(user: str) -> str:
    """Hash: event id -> payload of a debited gift whose credit is not yet confirmed."""
    return f"{user_tag(user)}:outbox"


def key_slot(key: str) -> int:
    """The cluster hash slot of `key` (CRC16 of its hash tag, as Redis computes it)."""
    data = key.encode()
    start = data.find(b"{")
    if start > -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each slot, a short hash tag ('o<n>') that falls in it (about 150,000 tries: ~0.1 s,
    once per process)."""
    tags: dict[int, str] = {}
    n = 0
    while len(tags) < SLOTS:
        tag = f"o{n}"
        tags.setdefault(binascii.crc_hqx(tag.encode(), 0) % SLOTS, tag)
        n += 1
    return tuple(tags[slot] for slot in range(SLOTS))


def pending_index(slot: int) -> str:
    """Sorted set: user -> when its outbox got the oldest entry still pending (ms), for the users
    whose keys are in `slot`. The relay reads these instead of scanning every key; the hash tag
    puts each in its users' slot, so the Function that writes an outbox entry indexes it."""
    return f"{PREFIX}:{{{_slot_tags()[slot]}}}:pending"


def pending_outboxes(user: str) -> str:
    """The pending index of the user's slot."""
    return pending_index(key_slot(user_tag(user)))


def streak(user: str) -> str:
    """Hash: the user's current streak (id, room, gift, repeat, last tap)."""
    return f"{user_tag(user)}:streak"


def user_from_account(key: str) -> str:
    """The user of any of its keys (account, outbox, ...)."""
    return key[len(PREFIX) + 4 : key.index("}")]


def room_tag(room: str) -> str:
    return f"{PREFIX}:{{r:{room}}}"


def room(room_id: str) -> str:
    """Hash: host, live, receives, epoch, offset, viewers, and the host's diamonds: diamonds
    (balance), earned, paid_out, carry (fraction carried, in 1/denominator)."""
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


def room_session(room_id: str) -> str:
    """Hash: the current (or last) live session: id, started, diamonds, coins, gifts, peak,
    viewer_ms and last_change (the integral of viewers over time, for the average)."""
    return f"{room_tag(room_id)}:session"


def room_session_gifts(room_id: str) -> str:
    """Hash: gift id -> count sent in the current session."""
    return f"{room_tag(room_id)}:session:gifts"


def room_session_top(room_id: str) -> str:
    """Sorted set: user -> coins sent in the current session."""
    return f"{room_tag(room_id)}:session:top"


def room_top(room_id: str) -> str:
    """Sorted set: user -> coins sent to this host, all time."""
    return f"{room_tag(room_id)}:top"


def room_names(room_id: str) -> str:
    """Hash: user -> display name, for the boards."""
    return f"{room_tag(room_id)}:names"


def room_sessions(room_id: str) -> str:
    """Hash: session id -> summary (msgpack) of each ended session."""
    return f"{room_tag(room_id)}:sessions"


def room_presence(room_id: str) -> str:
    """Hash: worker id -> 'members:expires_ms' (the viewer count, summed over live workers)."""
    return f"{room_tag(room_id)}:presence"


def room_payouts(room_id: str) -> str:
    """Hash: payout request id -> record (msgpack) of the host's cash-outs."""
    return f"{room_tag(room_id)}:payouts"


def video(video_id: str) -> str:
    """Hash: room, host of a video that can receive gifts."""
    return f"{PREFIX}:video:{video_id}"


def receipt(receipt_id: str) -> str:
    """String: the user who presented a store receipt (receipts are unique across users)."""
    return f"{PREFIX}:receipt:{receipt_id}"


# Sorted set: '<room> <chest>' -> when the chest closes (ms): chests still to settle and pay.
CHESTS_DUE = f"{PREFIX}:chests:due"


def chest(room_id: str, chest_id: str) -> str:
    """Hash: a treasure chest: from, coins, opens_at, closes_at, state, claims, share."""
    return f"{room_tag(room_id)}:chest:{chest_id}"


def chest_claimants(room_id: str, chest_id: str) -> str:
    """Sorted set: claimant -> claim order (1, 2, ...)."""
    return f"{room_tag(room_id)}:chest:{chest_id}:claims"


def chest_plan(room_id: str, chest_id: str) -> str:
    """Hash: user -> coins to pay when the chest is settled."""
    return f"{room_tag(room_id)}:chest:{chest_id}:plan"


# Plain (not sharded) pub/sub channel of broadcast gifts: every worker hears every region.
BROADCAST_CHANNEL = f"{PREFIX}:broadcast"


def room_channel(room_id: str) -> str:
    """Sharded pub/sub channel of the room (same slot as its keys)."""
    return f"{room_tag(room_id)}:ch"


def room_from_key(key: str) -> str:
    return key[len(PREFIX) + 4 : key.index("}")]


# The archiver's lease ('token fence', expiring) and its fencing counter, in one slot.
ARCHIVE_LEASE = f"{PREFIX}:{{archive}}:lease"
ARCHIVE_FENCE = f"{PREFIX}:{{archive}}:fence"
# String 'ms seq stream': the archived credit up to which the rooms' `credited` records are
# pruned (the archiver's position; losing it only means pruning again what is gone).
ARCHIVE_PRUNED = f"{PREFIX}:{{archive}}:pruned"
# String 'ms seq stream': the archived gift up to which the stored answers of gift requests are
# deleted (as ARCHIVE_PRUNED; losing it only means deleting again what is gone).
ARCHIVE_ANSWERS_PRUNED = f"{PREFIX}:{{archive}}:answers-pruned"
# The streams the archiver copies to PostgreSQL.
USER_LEDGER_PATTERN = f"{PREFIX}:{{u:*}}:ledger"
ROOM_LEDGER_PATTERN = f"{PREFIX}:{{r:*}}:ledger"
ROOM_EVENTS_PATTERN = f"{PREFIX}:{{r:*}}:events"


# Battles: all keys of a battle share the hash tag {b:<id>}, the battle's own slot, wherever
# its rooms live.
# Sorted set: battle id -> when it is next due (ms): the invite's expiry, or the end of the
# battle; 0 for one still to finish or announce. The relay polls it, so a battle ends on time
# whichever worker started it.
BATTLES_OPEN = f"{PREFIX}:battles:open"


def battle_tag(battle_id: str) -> str:
    return f"{PREFIX}:{{b:{battle_id}}}"


def battle(battle_id: str) -> str:
    """Hash: id, state (invited, live, ending, ended, declined), rooms and hosts (comma
    separated, one per side, the inviter first), duration_ms, created, expires_at (of the
    invite), started_at, ends_at, reason, forfeit, result (msgpack of the `ended` frame),
    announced."""
    return battle_tag(battle_id)


def battle_accepted(battle_id: str) -> str:
    """Set: the rooms that accepted (the inviter's from the start)."""
    return f"{battle_tag(battle_id)}:accepted"


def battle_scores(battle_id: str) -> str:
    """Hash: room -> coins scored."""
    return f"{battle_tag(battle_id)}:scores"


def battle_scored(battle_id: str) -> str:
    """Hash: gift event id -> room (each gift scores once)."""
    return f"{battle_tag(battle_id)}:scored"


def battle_top(battle_id: str, room_id: str) -> str:
    """Sorted set: user -> coins given to this side in the battle."""
    return f"{battle_tag(battle_id)}:top:{room_id}"


def battle_names(battle_id: str) -> str:
    """Hash: user -> display name, for the top gifters."""
    return f"{battle_tag(battle_id)}:names"


def room_invites(room_id: str) -> str:
    """Hash: tokens, at — the battle invites of the room's host (a token bucket)."""
    return f"{room_tag(room_id)}:invites"


def room_battle_scores(room_id: str) -> str:
    """Hash: gift event id -> score (msgpack {battle, event, room, from, from_name, coins, ts}) of a
    gift credited while the room was in a battle, until the battle has counted it: the outbox
    that carries a score from the room's slot to the battle's."""
    return f"{room_tag(room_id)}:battle:scores"
