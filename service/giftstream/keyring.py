"""Where the token-signing keys come from: `GIFTSTREAM_SECRET`, a secret file
(`GIFTSTREAM_SECRET_FILE`), or `<data dir>/secret`, generated once with mode 0600 in a 0700
directory. Never from the store: whoever can read the store (or its AOF) must not be able to
mint tokens. Every worker of one `serve` reads the same setting or the same file.
"""

import logging
import os
import secrets
import stat
from pathlib import Path

from giftstream.settings import Settings
from giftstream.store.embedded import FILE_MODE, private_dir
from giftstream.tokens import Key, Keyring, weakness

log = logging.getLogger(__name__)

SECRET_FILE_NAME = "secret"
GENERATED_BYTES = 48


class SecretError(RuntimeError):
    """The server cannot start with the keys it was given (the message says what to do)."""


def load_keyring(settings: Settings) -> Keyring:
    """The keys of this server. Outside dev mode a short, repetitive or placeholder secret is
    refused, as is a secret file that other users can read."""
    current, previous = _secrets(settings)
    if settings.secret_previous:
        previous = settings.secret_previous.encode()
    if not settings.dev:
        for name, value in (("the token secret", current), ("the previous secret", previous)):
            why = weakness(value) if value is not None else None
            if why:
                raise SecretError(
                    f"{name} is too weak to sign tokens ({why}). Set GIFTSTREAM_SECRET to a "
                    "random value, e.g. `openssl rand -base64 48`, or unset it to have one "
                    "generated in the data directory (dev mode accepts any secret)"
                )
    return Keyring(Key(current), Key(previous) if previous else None, dev=settings.dev)


def secret_path(settings: Settings) -> Path:
    return settings.secret_file or settings.data_dir / SECRET_FILE_NAME


def _secrets(settings: Settings) -> tuple[bytes, bytes | None]:
    if settings.secret:
        return settings.secret.encode(), None
    path = secret_path(settings)
    if settings.secret_file is None:
        _create_once(path)
    try:
        info = path.stat()
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise SecretError(f"cannot read the token secret file {path}: {e.strerror}") from e
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and not settings.dev:
        raise SecretError(
            f"the token secret file {path} can be read by other users "
            f"(mode {stat.filemode(info.st_mode)}): `chmod 600` it"
        )
    values = [line.strip() for line in lines if line.strip()]
    if not values or len(values) > 2:
        raise SecretError(
            f"the token secret file {path} must hold the current secret on its first line and, "
            "during a rotation, the previous one on the second"
        )
    return values[0], values[1] if len(values) == 2 else None


def _create_once(path: Path) -> None:
    """Write a random secret to `path` unless it exists. The file appears complete or not at
    all (written aside, then linked into place, which fails if another worker was first)."""
    private_dir(path.parent)
    if path.exists():
        return
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_urlsafe(GENERATED_BYTES).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
            log.info("generated the token secret in %s", path)
        except FileExistsError:
            pass
    finally:
        aside.unlink(missing_ok=True)
