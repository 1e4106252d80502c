"""The one strict reader of client input: every number, id and string taken from a query string,
a path, a JSON body or a frame goes through these functions, on HTTP and WebSocket alike.

Each either returns a value of exactly the promised shape or raises InvalidField with a sentence
that names the field; none lets a Python exception escape. Integers in text are ASCII digits
only and of bounded length (`str.isdigit` accepts "²" and `int` then fails, and `int` refuses
more than 4,300 digits); ids the server hands out match a pattern in full, so that no id can
name another key than its own (a chest `c1:claims` would reach the claimants' sorted set).
"""

import re
from typing import Any

from giftstream.errors import InvalidField

MAX_ID_LENGTH = 64
# The most digits of an integer read from text: enough for any limit the service has (2**63).
MAX_DIGITS = 19
# Ids the server assigns (rooms, chests, videos, users): letters, digits, '-', '_' and '.'.
ID = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_ID_LENGTH}}}")
DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")
REGION = re.compile(r"[A-Z]{2}")
# How much of a client's string an error message may quote.
QUOTED_LENGTH = 64


def quoted(value: object) -> str:
    """A client's value as a message may show it: short, escaped, always valid ASCII."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:QUOTED_LENGTH])[1:-1]


def text(value: Any, name: str, max_length: int) -> str:
    """Printable text of 1 to `max_length` characters (no control characters, no lone
    surrogates, which are not text and cannot be encoded back)."""
    if not isinstance(value, str):
        raise InvalidField(f"the field '{name}' must be a string")
    if not 0 < len(value) <= max_length:
        raise InvalidField(f"the field '{name}' must be 1 to {max_length} characters long")
    if not value.isprintable():
        raise InvalidField(f"the field '{name}' must be printable text")
    return value


def ident(value: Any, name: str) -> str:
    """An id the server assigned: 1 to 64 ASCII letters, digits, '-', '_' or '.'."""
    if not isinstance(value, str) or ID.fullmatch(value) is None:
        raise InvalidField(
            f"the field '{name}' must be an id: 1 to {MAX_ID_LENGTH} letters, digits, "
            "'-', '_' or '.'"
        )
    return value


def integer(value: Any, name: str, low: int, high: int) -> int:
    """A decoded integer in [low, high]: booleans and floats are not integers."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidField(f"the field '{name}' must be an integer")
    if not low <= value <= high:
        raise InvalidField(f"the field '{name}' must be between {low} and {high}")
    return value


def digits(raw: str, name: str, low: int, high: int) -> int:
    """A whole number written in text (a query string, a path): ASCII digits only."""
    if DIGITS.fullmatch(raw) is None:
        raise InvalidField(f"'{name}' must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidField(f"'{name}' must be a whole number from {low} to {high}")
    return value


def region(value: Any, name: str = "region") -> str:
    """A two-letter country code in capitals, such as 'US'."""
    if not isinstance(value, str) or REGION.fullmatch(value) is None:
        raise InvalidField(f"'{name}' must be a two-letter country code such as 'US'")
    return value
