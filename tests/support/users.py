"""The users of test scenes, as the HTTP API hands them out."""

from dataclasses import dataclass


@dataclass
class User:
    user: str
    token: str


def bearer(user: User) -> dict[str, str]:
    return {"authorization": f"Bearer {user.token}"}
