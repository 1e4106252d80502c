"""Server-signed tokens: `v1.<base64url JSON claims>.<base64url HMAC-SHA256>`.

Pure functions; the secret comes from the store (or the configuration) at start-up.
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from giftstream.errors import Unauthenticated

VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    role: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, f"{VERSION}.{body}".encode(), hashlib.sha256).digest())


def sign(claims: Claims, secret: bytes) -> str:
    body = _b64(json.dumps({"u": claims.user, "r": claims.role, "exp": claims.expires}).encode())
    return f"{VERSION}.{body}.{_mac(secret, body)}"


def verify(token: str, secret: bytes, now_s: int) -> Claims:
    """The claims of a valid, unexpired token; Unauthenticated otherwise."""
    parts = token.split(".")
    if not token.isascii() or len(parts) != 3 or parts[0] != VERSION:
        raise Unauthenticated("the token is malformed")
    body, mac = parts[1], parts[2]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        raise Unauthenticated("the token's signature is not valid")
    try:
        data = json.loads(_unb64(body))
        claims = Claims(user=str(data["u"]), role=str(data["r"]), expires=int(data["exp"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise Unauthenticated("the token is malformed") from e
    if claims.expires <= now_s:
        raise Unauthenticated("the token has expired")
    return claims
