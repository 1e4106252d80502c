"""Server-signed tokens: `v1.<base64url JSON claims>.<base64url HMAC-SHA256>`.

Pure functions; the keys come from the configuration or the data directory (giftstream.keyring)
at start-up. Claims: `u` user, `r` role, `exp` expiry, `kid` the signing key's id, `m` the mode
of the server that minted it ("dev" or "live"): a live server refuses dev-minted tokens.
"""

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections import Counter
from dataclasses import dataclass

from giftstream.errors import Unauthenticated

VERSION = "v1"
DEV_MODE = "dev"
LIVE_MODE = "live"
# A secret shorter than this, or with less estimated entropy, is refused outside dev mode.
MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128
# Text deployment templates put where a secret goes.
PLACEHOLDER_MARKS = ("change-me", "changeme", "placeholder")


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    role: str
    expires: int


@dataclass(frozen=True, slots=True)
class Key:
    secret: bytes

    @property
    def kid(self) -> str:
        """A short public name of the key: tokens say which key signed them without revealing
        anything about it (a hash of a domain-separated hash of the secret)."""
        return hashlib.sha256(b"giftstream-kid:" + self.secret).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key that signs (`current`), the keys that verify (`current` and, during a rotation,
    `previous`), and the mode this server mints tokens in and accepts."""

    current: Key
    previous: Key | None = None
    dev: bool = False

    @property
    def mode(self) -> str:
        return DEV_MODE if self.dev else LIVE_MODE

    def verifying(self) -> tuple[Key, ...]:
        return (self.current,) if self.previous is None else (self.current, self.previous)


def weakness(secret: bytes) -> str | None:
    """Why a secret is too weak to sign live tokens, or None when it is strong enough."""
    if len(secret) < MIN_SECRET_BYTES:
        return f"it is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed"
    lowered = secret.lower()
    if any(mark.encode() in lowered for mark in PLACEHOLDER_MARKS):
        return "it is a template's placeholder"
    if entropy_bits(secret) < MIN_SECRET_BITS:
        return f"it is too repetitive (under {MIN_SECRET_BITS} bits of estimated entropy)"
    return None


def entropy_bits(secret: bytes) -> float:
    """An estimate: the length times the Shannon entropy of its byte frequencies. It catches
    repeated or few-symbol strings ("a" * 40, "abab..."); a random secret easily passes."""
    counts = Counter(secret)
    n = len(secret)
    return n * -sum(c / n * math.log2(c / n) for c in counts.values())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, f"{VERSION}.{body}".encode(), hashlib.sha256).digest())


def sign(claims: Claims, keys: Keyring) -> str:
    """A token signed with the current key, marked with this server's mode."""
    body = _b64(
        json.dumps(
            {
                "u": claims.user,
                "r": claims.role,
                "exp": claims.expires,
                "kid": keys.current.kid,
                "m": keys.mode,
            }
        ).encode()
    )
    return f"{VERSION}.{body}.{_mac(keys.current.secret, body)}"


def verify(token: str, keys: Keyring, now_s: int) -> Claims:
    """The claims of a valid, unexpired token; Unauthenticated otherwise.

    The signature is checked (against each verifying key) before the claims are parsed: nothing
    an outsider wrote is decoded."""
    parts = token.split(".")
    if not token.isascii() or len(parts) != 3 or parts[0] != VERSION:
        raise Unauthenticated("the token is malformed")
    body, mac = parts[1], parts[2]
    signer = next(
        (k for k in keys.verifying() if hmac.compare_digest(mac, _mac(k.secret, body))), None
    )
    if signer is None:
        raise Unauthenticated("the token's signature is not valid")
    try:
        data = json.loads(_unb64(body))
        claims = Claims(user=str(data["u"]), role=str(data["r"]), expires=int(data["exp"]))
        kid, mode = str(data["kid"]), str(data["m"])
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise Unauthenticated("the token is malformed") from e
    if kid != signer.kid:
        raise Unauthenticated("the token names another signing key")
    if mode != LIVE_MODE and not keys.dev:
        raise Unauthenticated("the token was minted by a dev-mode server; sign in again")
    if claims.expires <= now_s:
        raise Unauthenticated("the token has expired")
    return claims
