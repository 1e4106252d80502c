"""Token keys: strength, key ids, the minting mode, rotation, and where the keys come from."""

import base64
import json
import secrets
import stat
from pathlib import Path

import pytest

from giftstream import tokens
from giftstream.errors import Unauthenticated
from giftstream.keyring import SecretError, load_keyring
from giftstream.settings import Settings

OLD = tokens.Key(secrets.token_bytes(32))
NEW = tokens.Key(secrets.token_bytes(32))
LATER = 2_000_000_000
CLAIMS = tokens.Claims("u1", "admin", LATER)


@pytest.mark.parametrize(
    "weak",
    [
        pytest.param(b"a", id="one-byte"),
        pytest.param(b"s" * 31, id="31-bytes"),
        pytest.param(b"a" * 40, id="one-symbol"),
        pytest.param(b"ab" * 32, id="two-symbols"),
        pytest.param(b"CHANGE-ME-placeholder-not-a-secret", id="placeholder"),
    ],
)
def test_a_short_repetitive_or_placeholder_secret_is_weak(weak: bytes) -> None:
    assert tokens.weakness(weak) is not None


@pytest.mark.parametrize(
    "strong",
    [
        pytest.param(secrets.token_urlsafe(32).encode(), id="urlsafe-32"),
        pytest.param(secrets.token_hex(32).encode(), id="hex-32"),
        pytest.param(base64.b64encode(secrets.token_bytes(48)), id="openssl-base64-48"),
    ],
)
def test_a_random_secret_is_strong(strong: bytes) -> None:
    assert tokens.weakness(strong) is None


def test_a_token_carries_the_key_id_and_the_mode_that_minted_it() -> None:
    token = tokens.sign(CLAIMS, tokens.Keyring(NEW, dev=True))
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert (body["kid"], body["m"]) == (NEW.kid, "dev")
    assert NEW.kid != OLD.kid and NEW.secret.hex() not in token


def test_a_live_server_refuses_a_token_minted_in_dev_mode_with_the_same_key() -> None:
    dev_token = tokens.sign(CLAIMS, tokens.Keyring(NEW, dev=True))
    assert tokens.verify(dev_token, tokens.Keyring(NEW, dev=True), 0) == CLAIMS
    with pytest.raises(Unauthenticated, match="dev-mode"):
        tokens.verify(dev_token, tokens.Keyring(NEW), 0)


def test_a_dev_server_accepts_live_tokens() -> None:
    live_token = tokens.sign(CLAIMS, tokens.Keyring(NEW))
    assert tokens.verify(live_token, tokens.Keyring(NEW, dev=True), 0) == CLAIMS


def test_during_a_rotation_old_tokens_are_accepted_and_new_ones_signed_with_the_new_key() -> None:
    old_token = tokens.sign(CLAIMS, tokens.Keyring(OLD))
    rotating = tokens.Keyring(NEW, previous=OLD)
    assert tokens.verify(old_token, rotating, 0) == CLAIMS
    new_token = tokens.sign(CLAIMS, rotating)
    assert tokens.verify(new_token, tokens.Keyring(NEW), 0) == CLAIMS
    with pytest.raises(Unauthenticated, match="signature"):
        tokens.verify(new_token, tokens.Keyring(OLD), 0)


def test_after_the_rotation_tokens_of_the_retired_key_are_refused() -> None:
    old_token = tokens.sign(CLAIMS, tokens.Keyring(OLD))
    with pytest.raises(Unauthenticated, match="signature"):
        tokens.verify(old_token, tokens.Keyring(NEW), 0)


def _signed(claims: dict[str, object], key: tokens.Key) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"v1.{body}.{tokens._mac(key.secret, body)}"


def test_a_token_without_a_key_id_or_a_mode_is_refused() -> None:
    legacy = _signed({"u": "u1", "r": "admin", "exp": LATER}, NEW)
    with pytest.raises(Unauthenticated, match="malformed"):
        tokens.verify(legacy, tokens.Keyring(NEW, dev=True), 0)


def test_a_token_naming_another_key_than_the_one_that_signed_it_is_refused() -> None:
    mislabelled = _signed({"u": "u1", "r": "admin", "exp": LATER, "kid": OLD.kid, "m": "live"}, NEW)
    with pytest.raises(Unauthenticated, match="another signing key"):
        tokens.verify(mislabelled, tokens.Keyring(NEW, previous=OLD), 0)


# -- where the keys come from ------------------------------------------------------------------


def test_without_a_setting_a_secret_is_generated_once_in_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_keyring(Settings(data_dir=data))
    again = load_keyring(Settings(data_dir=data))
    assert first.current == again.current and tokens.weakness(first.current.secret) is None
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in data.iterdir()) == ["secret"], "nothing left aside"


def test_a_weak_configured_secret_is_refused_outside_dev_mode_only(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match=r"too weak.*openssl rand"):
        load_keyring(Settings(data_dir=tmp_path, secret="a" * 40))
    with pytest.raises(SecretError, match="previous secret is too weak"):
        load_keyring(
            Settings(data_dir=tmp_path, secret="x" + NEW.secret.hex(), secret_previous="a")
        )
    assert load_keyring(Settings(data_dir=tmp_path, secret="a", dev=True)).current.secret == b"a"


def test_a_secret_file_holds_the_current_and_the_previous_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(NEW.secret.hex().encode() + b"\n" + OLD.secret.hex().encode() + b"\n")
    path.chmod(0o600)
    keys = load_keyring(Settings(data_dir=tmp_path / "unused", secret_file=path))
    assert keys.current.secret == NEW.secret.hex().encode()
    assert keys.previous is not None and keys.previous.secret == OLD.secret.hex().encode()
    assert not (tmp_path / "unused").exists(), "no secret generated beside a configured file"


def test_a_secret_file_other_users_can_read_is_refused_outside_dev_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(NEW.secret.hex())
    path.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_keyring(Settings(secret_file=path))
    assert load_keyring(Settings(secret_file=path, dev=True)).current.secret == path.read_bytes()


def test_a_missing_secret_file_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read the token secret file"):
        load_keyring(Settings(secret_file=tmp_path / "none"))
