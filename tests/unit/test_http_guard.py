"""Which peers the HTTP connection guard counts, and which Host names the app answers."""

import pytest

from giftstream.app import allowed_hosts
from giftstream.http.guard import is_proxy
from giftstream.settings import Settings


@pytest.mark.parametrize(
    ("ip", "allowed", "proxy"),
    [
        ("10.0.0.7", "*", True),
        ("10.0.0.7", "10.0.0.0/8", True),
        ("10.0.0.7", "127.0.0.1,::1", False),
        ("127.0.0.1", "127.0.0.1,::1", True),
        ("::1", "127.0.0.1, ::1", True),
        ("192.0.2.9", ["192.0.2.0/24"], True),
        ("192.0.2.9", "unix:/run/gs.sock,192.0.2.1", False),
        ("not-an-ip", "10.0.0.0/8", False),
    ],
)
def test_a_peer_is_a_proxy_when_uvicorn_believes_its_forwarded_header(
    ip: str, allowed: str | list[str], proxy: bool
) -> None:
    assert is_proxy(ip, allowed) is proxy


def test_the_default_hosts_are_the_loopback_names() -> None:
    assert allowed_hosts(Settings()) == {"127.0.0.1", "localhost", "[::1]"}


@pytest.mark.parametrize(
    ("host", "added"), [("10.1.2.3", "10.1.2.3"), ("fd00::5", "[fd00::5]"), ("0.0.0.0", None)]
)
def test_the_address_listened_on_is_answered_too(host: str, added: str | None) -> None:
    hosts = allowed_hosts(Settings(host=host))
    assert hosts - Settings().allowed_hosts == ({added} if added else set())


def test_allowed_hosts_come_from_the_environment() -> None:
    settings = Settings.from_env({"GIFTSTREAM_ALLOWED_HOSTS": "gifts.example.com, *.example.org"})
    assert settings.allowed_hosts == {"gifts.example.com", "*.example.org"}
