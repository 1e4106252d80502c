"""User accounts: creation, coin grants, reading balances."""

from dataclasses import dataclass

from giftstream.store import keys
from giftstream.store.connection import Redis, fcall, text


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    region: str
    role: str
    coins: int
    room: str | None


class UserExists(Exception):
    pass


class GrantConflict(Exception):
    pass


class NoSuchUser(Exception):
    pass


def _user_keys(user: str) -> list[str]:
    return [keys.account(user), keys.grants(user), keys.user_ledger(user)]


async def create_user(
    r: Redis, user: str, name: str, region: str, role: str, coins: int, created_ms: int
) -> int:
    """Create an account holding `coins` granted for free (dev mode); returns the balance."""
    reply = await fcall(
        r,
        "user_create",
        _user_keys(user),
        [user, name, region, role, created_ms, coins, f"create:{user}"],
    )
    if reply[0] == b"exists":
        raise UserExists(user)
    return int(reply[1])


async def grant_coins(r: Redis, user: str, grant_id: str, coins: int, kind: str) -> int:
    """Add coins, once per grant id; returns the balance."""
    reply = await fcall(r, "grant_coins", _user_keys(user), [grant_id, coins, kind])
    status = reply[0]
    if status == b"conflict":
        raise GrantConflict(grant_id)
    if status == b"no_user":
        raise NoSuchUser(user)
    return int(reply[1])


async def get_account(r: Redis, user: str) -> Account | None:
    fields = await r.hmget(keys.account(user), ["name", "region", "role", "coins", "room"])
    name, region, role, coins, room = fields
    if coins is None:
        return None
    return Account(
        id=user,
        name=text(name) if name else user,
        region=text(region) if region else "",
        role=text(role) if role else "viewer",
        coins=int(coins),
        room=text(room) if room else None,
    )
