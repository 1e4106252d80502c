"""The users of test scenes, as the HTTP API hands them out."""

from dataclasses import dataclass

# A display name of 64 four-byte characters: the frames that name its user are bigger, so that
# fewer gifts fill a queue.
BIG_NAME = "\U0001f339" * 64


@dataclass
class User:
    user: str
    token: str


def bearer(user: User) -> dict[str, str]:
    return {"authorization": f"Bearer {user.token}"}
