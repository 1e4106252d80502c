"""No input answers 500: fuzzed path parameters, query strings, headers and JSON bodies on every
HTTP route of the app, against a real `giftstream serve --dev`.

The routes are read from the application itself (`giftstream.app.routes()`), so a route added
later is fuzzed without touching this file. Each answer must be below 500 (`/readyz` may say 503
only when the store is down, which it is not here), and every JSON error has the project's
body: {"code", "message"}.
"""

import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from giftstream.app import routes
from support import ServerProcess

EXAMPLES_PER_ROUTE = 30
PARAM = re.compile(r"{(\w+)}")
# Field and parameter names the API reads, so that fuzzed values reach its readers.
NAMES = [
    "name", "region", "role", "coins", "age", "type", "receipt", "package", "channel",
    "daily_cap", "guardian_code", "new_guardian_code", "id", "points", "diamonds", "gift",
    "count", "frozen", "reason",
]  # fmt: skip


def http_routes() -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route of the app; a Mount as `<prefix>/{path}`."""
    found: list[tuple[str, str]] = []
    for route in routes():
        if isinstance(route, Route):
            found += [(method, route.path) for method in sorted(route.methods or {"GET"})]
        elif isinstance(route, Mount):
            found.append(("GET", route.path + "/{path}"))
    return found


ROUTES = http_routes()

hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        ["²", "٣", "\uff11", "-1", "1e3", "0x1", " 1", "1\n", "IN\n", "in", "ß", "..", "%"]
    ),
    st.integers(min_value=0, max_value=10**30).map(str),
    st.integers(min_value=4_000, max_value=6_000).map(lambda n: "9" * n),
    st.sampled_from([":claims", "}", "{", "r1:events", "u1}:acct", "a/b"]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), inner, max_size=5),
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(NAMES), json_values, max_size=6).map(
        lambda d: json.dumps(d).encode()
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"[" * 30_000, b'{"a":' * 6_000, b'{"\\ud800": 1}', b'{"name": "\\udfff"}']),
    st.just(b""),
)
content_types = st.sampled_from(
    [None, "application/json", "text/plain", "application/x-www-form-urlencoded", "x/\u00e9"]
)
queries = st.dictionaries(
    st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), hostile_text, max_size=4
)


@pytest.fixture(scope="module")
def tokens(valkey_server: ServerProcess) -> Iterator[list[str | None]]:
    """Authorization headers to try: none, each role's real token, and garbage."""
    headers: list[str | None] = [None, "Bearer", "Bearer v1.x.y", "Basic abc"]
    with httpx.Client(base_url=valkey_server.base_url, timeout=10.0) as http:
        for role in ("viewer", "host", "admin"):
            body = {"name": f"fz-{role}", "region": "US", "role": role, "coins": 1000}
            r = http.post("/v1/dev/users", json=body)
            assert r.status_code == 200, r.text
            headers.append(f"Bearer {r.json()['token']}")
    yield headers


@pytest.fixture(scope="module")
def http(valkey_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=valkey_server.base_url, timeout=10.0) as client:
        yield client


def _fill(template: str, values: list[str]) -> str:
    names = PARAM.findall(template)
    filled = template
    for name, value in zip(names, values, strict=False):
        filled = filled.replace("{" + name + "}", urllib.parse.quote(value, safe="") or "x")
    return filled


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@settings(
    max_examples=EXAMPLES_PER_ROUTE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path_values=st.lists(hostile_text, min_size=2, max_size=2),
    query=queries,
    body=bodies,
    content_type=content_types,
    auth=st.integers(min_value=0, max_value=6),
)
def test_no_fuzzed_request_on_any_route_answers_500(
    http: httpx.Client,
    tokens: list[str | None],
    method: str,
    template: str,
    path_values: list[str],
    query: dict[str, str],
    body: bytes,
    content_type: str | None,
    auth: int,
) -> None:
    headers: dict[str, str | bytes] = {}
    if tokens[auth] is not None:
        headers["authorization"] = str(tokens[auth])
    if content_type is not None:
        headers["content-type"] = content_type.encode()
    send: dict[str, Any] = {"params": query, "headers": headers}
    if method not in ("GET", "HEAD"):
        send["content"] = body
    response = http.request(method, _fill(template, path_values), **send)
    assert response.status_code < 500, (method, template, response.status_code, response.text)
    json_error = response.headers.get("content-type") == "application/json"
    if response.status_code >= 400 and json_error and method != "HEAD":
        error = response.json()
        assert set(error) == {"code", "message"}, error
        assert isinstance(error["code"], str) and isinstance(error["message"], str), error
