"""deploy/nginx.conf: WebSocket upgrades, client addresses, metrics kept inside, and the service's
own limits (the readers are in support/deploy.py)."""

from giftstream.settings import Settings
from support.deploy import (
    get_routes,
    headers,
    nginx,
    nginx_location,
    seconds,
    service,
    websocket_routes,
)

# -- nginx ----------------------------------------------------------------------------------


def test_nginx_passes_websocket_upgrades_with_http_1_1_and_hour_long_timeouts() -> None:
    [ws_path] = websocket_routes()
    location = nginx_location(ws_path)
    assert location.one("proxy_pass").args == ["http://giftstream"]
    assert location.one("proxy_http_version").args == ["1.1"]
    sent = headers(location)
    assert sent["upgrade"] == "$http_upgrade"
    assert sent["connection"] == "$connection_upgrade"
    [upgrade_map] = nginx().one("http").all("map")
    assert upgrade_map.args == ["$http_upgrade", "$connection_upgrade"]
    assert upgrade_map.one("default").args == ["upgrade"]
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(location.one(timeout).args[0]) >= 3600


def test_nginx_gives_the_service_the_client_address_host_and_scheme() -> None:
    """X-Forwarded-For is set to the client's address (not appended to what the client sent),
    and the Host is kept so that the service's same-origin check sees its public origin."""
    for path in ("/v1/ws", "/"):
        sent = headers(nginx_location(path))
        assert sent["x-forwarded-for"] == "$remote_addr"
        assert sent["host"] == "$http_host"
        assert sent["x-forwarded-proto"] == "$scheme"


def test_nginx_keeps_metrics_inside_and_answers_its_own_health_check() -> None:
    assert "/metrics" in get_routes()
    assert nginx_location("/metrics").one("return").args == ["404"]
    assert nginx_location("/nginx-health").one("return").args[0] == "200"
    test = service("nginx")["healthcheck"]["test"]
    assert test[-1] == "http://127.0.0.1/nginx-health"
    assert nginx().one("http").one("server").one("listen").args == ["80"]
    assert service("nginx")["ports"] == ["8000:80"]


def test_nginx_bounds_slow_and_greedy_clients_with_the_services_own_limits() -> None:
    """The replicas do not bound nginx per address (they trust it): nginx bounds its clients,
    with the same numbers as the settings' defaults (docs/security.md, "HTTP limits")."""
    http, s = nginx().one("http"), Settings()
    assert seconds(http.one("client_header_timeout").args[0]) == s.http_header_timeout_s
    assert seconds(http.one("client_body_timeout").args[0]) == s.http_body_timeout_s
    assert http.one("client_max_body_size").args == [f"{s.max_body_bytes // 1024}k"]
    assert http.one("large_client_header_buffers").args[1] == f"{s.http_max_header_bytes // 1024}k"
    assert seconds(http.one("keepalive_timeout").args[0]) == s.http_keep_alive_s
    assert http.one("limit_conn_status").args == ["429"]
    [zone] = http.all("limit_conn_zone")
    assert zone.args[0] == "$binary_remote_addr"
    name = zone.args[1].removeprefix("zone=").split(":")[0]
    per_address = str(s.http_max_connections_per_ip)
    assert nginx_location("/").one("limit_conn").args == [name, per_address]
    [ws_path] = websocket_routes()
    assert nginx_location(ws_path).one("limit_conn").args == [name, str(s.max_connections_per_ip)]
