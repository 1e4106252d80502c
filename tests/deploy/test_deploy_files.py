"""deploy/: the Dockerfile, the compose files, nginx.conf and the Kubernetes manifests, checked
against the code they run (Docker and Kubernetes cannot run here): every file parses, commands
parse with the CLI's own parser, probes and health checks request routes the app serves (and
pass against a live server), every GIFTSTREAM_* name is a setting, and the selectors, ports and
names that tie the objects together agree."""

import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml  # type: ignore[import-untyped]
from starlette.routing import Route, WebSocketRoute

from giftstream import cli
from giftstream.app import allowed_hosts, routes
from giftstream.settings import ENV_PREFIX, Settings
from giftstream.store.connection import connect
from support import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Variables that are not giftstream settings but are read by what it runs on: uvicorn trusts the
# X-Forwarded-For of these addresses.
OTHER_ENV = {"FORWARDED_ALLOW_IPS"}
SETTING_NAMES = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}

# -- readers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, value = (current + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
        current = ""
    return instructions


def instructions(keyword: str, stage: str = "final") -> list[str]:
    """The values of one kind of instruction, in the final stage or in all of them."""
    found: list[str] = []
    for ins in dockerfile():
        if ins.keyword == "FROM" and stage == "final":
            found = []
        elif ins.keyword == keyword:
            found.append(ins.value)
    return found


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for value in instructions("ENV"):
        for pair in shlex.split(value):
            name, _, setting = pair.partition("=")
            env[name] = setting
    return env


def image_command() -> list[str]:
    [entrypoint] = instructions("ENTRYPOINT")
    [command] = instructions("CMD")
    argv: list[str] = json.loads(entrypoint) + json.loads(command)
    return argv


def healthcheck_command() -> list[str]:
    [value] = instructions("HEALTHCHECK")
    _, _, exec_form = value.partition(" CMD ")
    argv: list[str] = json.loads(exec_form)
    return argv


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    [doc] = load_yaml(DEPLOY / name)
    assert isinstance(doc, dict)
    return doc


def service(name: str, file: str = "docker-compose.yml") -> dict[str, Any]:
    found: dict[str, Any] = compose(file)["services"][name]
    return found


def manifests() -> list[dict[str, Any]]:
    """The Kubernetes objects of deploy/k8s (the kustomization is not one)."""
    paths = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for path in paths for doc in load_yaml(path)]


def manifest(kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def deployment() -> dict[str, Any]:
    return manifest("Deployment", "giftstream")


def container() -> dict[str, Any]:
    [found] = deployment()["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list["Directive"] | None = None

    def all(self, name: str) -> list["Directive"]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str) -> "Directive":
        [found] = self.all(name)
        return found


NGINX_TOKEN = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[{};]|[^\s{};\"']+")


def nginx() -> Directive:
    """nginx.conf as a tree of directives (comments dropped, quotes removed)."""
    lines = (DEPLOY / "nginx.conf").read_text().splitlines()
    text = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in lines)
    tokens = NGINX_TOKEN.findall(text)

    def block(i: int) -> tuple[list[Directive], int]:
        out: list[Directive] = []
        words: list[str] = []
        while i < len(tokens):
            token = tokens[i]
            if token == ";":
                out.append(Directive(words[0], words[1:]))
                words = []
            elif token == "{":
                inner, i = block(i + 1)
                out.append(Directive(words[0], words[1:], inner))
                words = []
            elif token == "}":
                assert not words, f"unterminated directive {words}"
                return out, i
            else:
                words.append(token[1:-1] if token[:1] in "\"'" else token)
            i += 1
        assert not words, f"unterminated directive {words}"
        return out, i

    directives, end = block(0)
    assert end == len(tokens), "unbalanced braces"
    return Directive("main", [], directives)


def nginx_location(path: str) -> Directive:
    server = nginx().one("http").one("server")
    [found] = [loc for loc in server.all("location") if loc.args[-1] == path]
    return found


def headers(location: Directive) -> dict[str, str]:
    return {d.args[0].lower(): " ".join(d.args[1:]) for d in location.all("proxy_set_header")}


def get_routes() -> set[str]:
    return {r.path for r in routes() if isinstance(r, Route) and "GET" in (r.methods or set())}


def websocket_routes() -> set[str]:
    return {r.path for r in routes() if isinstance(r, WebSocketRoute)}


def serve_args(argv: list[str]) -> Any:
    """`giftstream ARGS` as the CLI parses it; argv[0] must be the installed command."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] == "giftstream" and scripts["giftstream"] == "giftstream.cli:main"
    return cli._parser().parse_args(argv[1:])


def seconds(value: str) -> int:
    """An nginx or compose duration ('3600s', '1m', '30') in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    return int(match[1]) * {"ms": 0, "s": 1, "m": 60, "h": 3600, None: 1}[match[2]]


# -- the Dockerfile -------------------------------------------------------------------------


def test_dockerfile_every_stage_starts_from_python_3_11_slim() -> None:
    bases = [value.split()[0] for value in instructions("FROM", stage="all")]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases


def test_dockerfile_runs_the_service_as_a_user_it_creates_without_root_privileges() -> None:
    users = instructions("USER")
    assert users, "the image must switch to a non-root user"
    name = users[-1].split(":")[0]
    assert name not in {"root", "0"}
    created = [
        shlex.split(part)
        for run in instructions("RUN")
        for part in run.split("&&")
        if part.strip().startswith("useradd")
    ]
    [useradd] = [args for args in created if args[-1] == name]
    assert int(useradd[useradd.index("--uid") + 1]) > 0


def test_dockerfile_command_is_giftstream_serve_on_every_interface_and_port_8000() -> None:
    args = serve_args(image_command())
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8000)
    # Nothing else is fixed in the image: workers, the store and the rest come from GIFTSTREAM_*.
    assert (args.workers, args.redis_url, args.data_dir, args.dev) == (None, None, None, None)


def test_dockerfile_command_takes_the_worker_count_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GIFTSTREAM_WORKERS", "3")
    assert cli._settings(serve_args(image_command())).workers == 3


def test_dockerfile_environment_names_are_giftstream_settings_that_parse() -> None:
    env = image_env()
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(ours) <= SETTING_NAMES
    settings = Settings.from_env(ours)
    assert settings.workers == 1 and settings.data_dir == Path("/data")


def test_dockerfile_keeps_the_embedded_store_data_dir_on_a_volume_it_owns() -> None:
    data_dir = image_env()["GIFTSTREAM_DATA_DIR"]
    volumes = [v for value in instructions("VOLUME") for v in json.loads(value)]
    assert data_dir in volumes
    user = instructions("USER")[-1]
    assert any(f"chown {user} {data_dir}" in run for run in instructions("RUN"))


def test_dockerfile_exposes_the_port_the_command_serves_on() -> None:
    assert instructions("EXPOSE") == [str(serve_args(image_command()).port)]


def test_dockerfile_copies_only_paths_that_exist_at_the_repository_root() -> None:
    sources = [
        source
        for value in instructions("COPY", stage="all")
        if not value.startswith("--from")
        for source in value.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context (the root)"


def _dockerignore() -> list[str]:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out)


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the root) out of the build context: the last
    pattern that matches it or one of its folders decides, `!` bringing it back."""
    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    result = False
    for line in _dockerignore():
        negated = line.startswith("!")
        pattern = _pattern(line.lstrip("!"))
        if any(pattern.fullmatch(p) for p in parents):
            result = not negated
    return result


def test_dockerignore_beside_the_dockerfile_sends_only_what_the_build_copies() -> None:
    for needed in (
        "pyproject.toml",
        "README.md",
        "requirements/serve.txt",
        "service/giftstream/cli.py",
    ):
        assert not ignored(needed), needed
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "docs/architecture.md",
        ".giftstream/appendonly.aof",
        "service/giftstream/__pycache__/cli.cpython-311.pyc",
        "service/giftstream.egg-info/PKG-INFO",
    ):
        assert ignored(left_out), left_out


def _context_files() -> Iterator[Path]:
    for top in ("pyproject.toml", "README.md", "requirements", "service"):
        path = ROOT / top
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            if not ignored(candidate.relative_to(ROOT).as_posix()):
                yield candidate


def test_the_build_context_makes_a_wheel_with_the_command_and_its_data(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for path in _context_files():
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
        check=True,
        timeout=300,
    )
    [wheel] = out.glob("giftstream-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "giftstream = giftstream.cli:main" in z.read(entry_points).decode()
    for packaged in (
        "giftstream/cli.py",
        "giftstream/data/gifts.toml",
        "giftstream/data/economy.toml",
        "giftstream/store/functions/gifts.lua",
        "giftstream/static/index.html",
    ):
        assert packaged in names, packaged


def _run_check(argv: list[str], port: int) -> int:
    """A health check's exec form run here: `python` is this interpreter, port 8000 is `port`."""
    assert argv[0] == "python" and "http://127.0.0.1:8000/" in argv[-1]
    script = argv[-1].replace("127.0.0.1:8000/", f"127.0.0.1:{port}/")
    return subprocess.run([sys.executable, *argv[1:-1], script], timeout=30).returncode


def _checked_path(argv: list[str]) -> str:
    url = re.search(r"http://[^'\"]+", argv[-1])
    assert url
    return urlsplit(url[0]).path


def test_dockerfile_healthcheck_asks_healthz_and_passes_on_a_live_server_not_a_closed_port(
    server: ServerProcess,
) -> None:
    argv = healthcheck_command()
    assert _checked_path(argv) == "/healthz" and "/healthz" in get_routes()
    assert _run_check(argv, server.port) == 0
    assert _run_check(argv, free_port()) != 0


def test_compose_healthcheck_asks_readyz_and_passes_on_a_ready_server_not_a_closed_port(
    server: ServerProcess,
) -> None:
    test = service("giftstream")["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = test[1:]
    assert _checked_path(argv) == "/readyz" and "/readyz" in get_routes()
    assert _run_check(argv, server.port) == 0
    assert _run_check(argv, free_port()) != 0


def test_grace_periods_cover_the_prestop_pause_and_the_servers_graceful_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Kubernetes grace period covers the preStop pause and the server's own graceful
    shutdown (what `giftstream serve` gives uvicorn); compose's stop_grace_period covers the
    latter."""
    run: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: run.update(kw))
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    settings = Settings(redis_url="redis://127.0.0.1:1/0", database_url="postgresql:///unused")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)  # serve() exports them; restored after the test
    cli.serve(settings, "warning")
    shutdown_s = run["timeout_graceful_shutdown"]
    assert isinstance(shutdown_s, int | float) and shutdown_s > 0

    pod = deployment()["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + shutdown_s + 5
    assert seconds(service("giftstream")["stop_grace_period"]) >= shutdown_s + 5


# -- docker compose -------------------------------------------------------------------------


def test_compose_files_parse_into_services_and_volumes() -> None:
    main, cluster = compose(), compose("docker-compose.cluster.yml")
    assert {"valkey", "postgres", "giftstream", "nginx"} <= set(main["services"])
    assert {"valkey-1", "valkey-2", "valkey-3", "valkey-cluster-init"} <= set(cluster["services"])
    for doc in (main, cluster):
        for svc in doc["services"].values():
            for volume in svc.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("."):
                    assert (DEPLOY / source).exists(), source
                else:
                    assert source in doc["volumes"], source


def _valkey_args(svc: dict[str, Any]) -> list[str]:
    command: list[str] = svc["command"]
    assert command[0] == "valkey-server"
    return command[1:]


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("docker-compose.yml", "valkey"),
        ("docker-compose.cluster.yml", "valkey-1"),
        ("docker-compose.cluster.yml", "valkey-2"),
        ("docker-compose.cluster.yml", "valkey-3"),
    ],
)
def test_compose_valkey_is_the_official_image_with_an_aof_on_a_volume_and_no_eviction(
    file: str, name: str
) -> None:
    svc = service(name, file)
    assert svc["image"].startswith("valkey/valkey:")
    args = _valkey_args(svc)
    assert _option(args, "--appendonly") == "yes"
    assert _option(args, "--maxmemory-policy") == "noeviction"
    assert any(v.endswith(":/data") for v in svc["volumes"])
    assert svc["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]


def test_compose_cluster_nodes_are_cluster_enabled_and_announce_their_service_names() -> None:
    for name in ("valkey-1", "valkey-2", "valkey-3"):
        args = _valkey_args(service(name, "docker-compose.cluster.yml"))
        assert _option(args, "--cluster-enabled") == "yes"
        assert _option(args, "--cluster-announce-hostname") == name
    script = (DEPLOY / "valkey-cluster-init.sh").read_text()
    ranges = re.findall(r"-h (valkey-\d) cluster addslotsrange (\d+) (\d+)", script)
    # The three primaries share the 16384 slots with no gap and no overlap.
    assert [name for name, _, _ in ranges] == ["valkey-1", "valkey-2", "valkey-3"]
    bounds = [(int(a), int(b)) for _, a, b in ranges]
    assert bounds[0][0] == 0 and bounds[-1][1] == 16383
    assert all(prev[1] + 1 == nxt[0] for prev, nxt in itertools.pairwise(bounds))
    init = service("valkey-cluster-init", "docker-compose.cluster.yml")
    assert init["entrypoint"] == ["sh", "/valkey-cluster-init.sh"]
    assert "./valkey-cluster-init.sh:/valkey-cluster-init.sh:ro" in init["volumes"]


def test_compose_runs_several_replicas_of_the_image_built_from_deploy_dockerfile() -> None:
    svc = service("giftstream")
    assert svc["deploy"]["replicas"] >= 2
    assert (DEPLOY / svc["build"]["context"]).resolve() == ROOT
    assert (ROOT / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "container_name" not in svc and "ports" not in svc  # replicas: only nginx publishes


def test_compose_service_command_is_giftstream_serve_on_the_port_nginx_balances_over() -> None:
    args = serve_args(["giftstream", *service("giftstream")["command"]])
    assert (args.command, args.host) == ("serve", "0.0.0.0")
    [upstream] = nginx().one("http").all("upstream")
    [server] = upstream.all("server")
    assert server.args[0] == f"giftstream:{args.port}"
    assert str(args.port) in service("giftstream")["expose"]


def _environment(file: str) -> dict[str, str]:
    env: dict[str, str] = service("giftstream", file).get("environment", {})
    return env


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_compose_environment_names_are_settings_and_parse(file: str) -> None:
    env = _environment(file)
    assert env
    assert set(env) <= SETTING_NAMES | OTHER_ENV
    Settings.from_env({k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX)})


async def test_compose_store_urls_name_the_valkey_services_and_the_service_accepts_them() -> None:
    single = _environment("docker-compose.yml")["GIFTSTREAM_REDIS_URL"]
    parts = urlsplit(single)
    assert (parts.scheme, parts.hostname, parts.port) == ("redis", "valkey", 6379)
    assert "valkey" in compose()["services"]
    clustered = _environment("docker-compose.cluster.yml")["GIFTSTREAM_REDIS_URL"]
    assert clustered.startswith("redis+cluster://")
    seeds = clustered.split("://", 1)[1].split(",")
    assert seeds == ["valkey-1:6379", "valkey-2:6379", "valkey-3:6379"]
    for url in (single, clustered):
        client = connect(url)  # builds the client the service would use; connects lazily
        await client.aclose()


def test_forwarded_allow_ips_is_the_variable_uvicorn_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replicas trust nginx's X-Forwarded-For through uvicorn's own variable."""
    value = _environment("docker-compose.yml")["FORWARDED_ALLOW_IPS"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", value)
    assert uvicorn.Config(app=lambda: None).forwarded_allow_ips == value


def test_compose_token_secret_comes_from_an_env_file_git_ignores() -> None:
    svc = service("giftstream")
    assert svc["env_file"] == ["secret.env", "postgres.env"]
    assert "GIFTSTREAM_SECRET" not in svc["environment"]
    ignored_by_git = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/secret.env"], cwd=ROOT, check=False
    )
    assert ignored_by_git.returncode == 0
    example = (DEPLOY / "secret.env.example").read_text().splitlines()
    assert "GIFTSTREAM_SECRET=" in example
    names = {line.split("=")[0] for line in example if line and not line.startswith("#")}
    assert names <= SETTING_NAMES


def _database_url(url: str) -> Any:
    """The parts of a ledger URL of the deploy files: PostgreSQL's, with no password in it."""
    settings = Settings.from_env({"GIFTSTREAM_DATABASE_URL": url})
    assert settings.database_url == url
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert parts.password is None  # PGPASSWORD, from a secret
    return parts


def test_compose_postgresql_is_the_official_image_on_a_volume_that_the_replicas_name() -> None:
    svc = service("postgres")
    assert svc["image"].startswith("postgres:")
    assert int(svc["image"].split(":")[1].split(".")[0]) >= 18  # what the embedded one runs
    # PostgreSQL 18's image keeps its data under /var/lib/postgresql (PGDATA in a subfolder).
    assert "postgres-data:/var/lib/postgresql" in svc["volumes"]
    env = svc["environment"]
    parts = _database_url(_environment("docker-compose.yml")["GIFTSTREAM_DATABASE_URL"])
    assert (parts.hostname, parts.port) == ("postgres", 5432)
    assert (parts.username, parts.path) == (env["POSTGRES_USER"], "/" + env["POSTGRES_DB"])
    assert svc["healthcheck"]["test"] == [
        "CMD",
        "pg_isready",
        "-U",
        env["POSTGRES_USER"],
        "-d",
        env["POSTGRES_DB"],
    ]
    # The cluster override keeps the one ledger: its replicas get the same URL.
    assert "postgres" not in compose("docker-compose.cluster.yml")["services"]
    assert "GIFTSTREAM_DATABASE_URL" not in _environment("docker-compose.cluster.yml")


def test_compose_postgresql_password_comes_from_an_env_file_git_ignores() -> None:
    assert service("postgres")["env_file"] == ["postgres.env"]
    assert "postgres.env" in service("giftstream")["env_file"]
    ignored_by_git = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/postgres.env"], cwd=ROOT, check=False
    )
    assert ignored_by_git.returncode == 0
    example = (DEPLOY / "postgres.env.example").read_text().splitlines()
    names = [line.split("=")[0] for line in example if line and not line.startswith("#")]
    # The server's password, and the same for the replicas' driver.
    assert names == ["POSTGRES_PASSWORD", "PGPASSWORD"]
    assert not set(names) & SETTING_NAMES


def test_compose_starts_each_part_once_what_it_needs_is_healthy() -> None:
    services = compose()["services"]
    assert all("healthcheck" in svc for svc in services.values())
    assert services["giftstream"]["depends_on"] == {
        "valkey": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert services["nginx"]["depends_on"] == {"giftstream": {"condition": "service_healthy"}}
    cluster = compose("docker-compose.cluster.yml")["services"]
    assert cluster["valkey-cluster-init"]["depends_on"] == {
        f"valkey-{n}": {"condition": "service_healthy"} for n in (1, 2, 3)
    }
    assert cluster["giftstream"]["depends_on"] == {
        "valkey-cluster-init": {"condition": "service_completed_successfully"}
    }


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


# -- Kubernetes -----------------------------------------------------------------------------


def test_every_manifest_parses_with_an_api_version_a_kind_and_a_name() -> None:
    docs = manifests()
    assert len(docs) >= 9
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_kustomization_applies_every_manifest_but_the_secret_placeholder_and_the_ingress() -> None:
    [kustomization] = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - {"secret.yaml", "ingress.yaml"}
    [image] = kustomization["images"]
    assert image["name"] == container()["image"]


def test_deployment_probes_ask_routes_the_app_serves_on_the_container_port() -> None:
    c = container()
    [port] = c["ports"]
    assert port["containerPort"] == serve_args(["giftstream", *c["args"]]).port
    probes = {name: c[name]["httpGet"] for name in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in [*probes.values(), c["startupProbe"]["httpGet"]]:
        assert probe["path"] in get_routes()
        assert probe["port"] == port["name"]


def test_deployment_runs_giftstream_serve_as_the_images_non_root_user() -> None:
    c = container()
    assert "command" not in c  # the image's ENTRYPOINT, `giftstream`
    args = serve_args([json.loads(instructions("ENTRYPOINT")[0])[0], *c["args"]])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8000)
    pod_security = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    run = next(r for r in instructions("RUN") if "useradd" in r)
    assert f"--uid {pod_security['runAsUser']}" in run
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_deployment_reads_settings_from_the_configmap_and_the_token_from_the_secret() -> None:
    c = container()
    [source] = c["envFrom"]
    assert source["configMapRef"]["name"] == "giftstream-config"
    manifest("ConfigMap", "giftstream-config")
    token, password = c["env"]
    assert token["name"] == "GIFTSTREAM_SECRET"
    assert token["name"] in SETTING_NAMES
    assert password["name"] == "PGPASSWORD"  # the ledger's, read by the driver
    for env in (token, password):
        ref = env["valueFrom"]["secretKeyRef"]
        secret = manifest("Secret", ref["name"])
        assert ref["key"] in secret["stringData"]


def test_configmap_keys_are_settings_and_point_at_the_valkey_service() -> None:
    data = manifest("ConfigMap", "giftstream-config")["data"]
    assert set(data) <= SETTING_NAMES | OTHER_ENV
    assert "GIFTSTREAM_SECRET" not in data
    settings = Settings.from_env({k: v for k, v in data.items() if k.startswith(ENV_PREFIX)})
    assert settings.redis_url is not None
    url = urlsplit(settings.redis_url)
    valkey = manifest("Service", "valkey")
    assert url.hostname == valkey["metadata"]["name"]
    assert url.port in {p["port"] for p in valkey["spec"]["ports"]}
    assert settings.database_url is not None
    ledger = _database_url(settings.database_url)
    postgres = manifest("Service", "postgres")
    assert ledger.hostname == postgres["metadata"]["name"]
    assert ledger.port in {p["port"] for p in postgres["spec"]["ports"]}


def test_the_probes_and_the_ingress_ask_for_hosts_the_pods_answer() -> None:
    """The kubelet's Host is the pod's address, which no setting can name: the probes send one."""
    data = manifest("ConfigMap", "giftstream-config")["data"]
    settings = Settings.from_env({k: v for k, v in data.items() if k.startswith(ENV_PREFIX)})
    c = container()
    hosts = allowed_hosts(replace(settings, host=serve_args(["giftstream", *c["args"]]).host))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        [header] = c[probe]["httpGet"]["httpHeaders"]
        assert header["name"] == "Host" and header["value"] in hosts, probe
    for rule in manifest("Ingress", "giftstream")["spec"]["rules"]:
        assert rule["host"] in hosts


def test_secret_is_a_marked_placeholder() -> None:
    text = (K8S / "secret.yaml").read_text()
    assert "PLACEHOLDER" in text and "kubectl create secret generic giftstream-secret" in text
    data = manifest("Secret", "giftstream-secret")["stringData"]
    assert set(data) == {"GIFTSTREAM_SECRET", "PGPASSWORD"}
    assert all(value.startswith("CHANGE-ME") for value in data.values())
    assert "--from-literal=PGPASSWORD=" in text


def _selects_the_pods(selector: dict[str, str]) -> None:
    spec = deployment()["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert selector == spec["selector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_service_selects_the_deployments_pods_and_targets_the_named_container_port() -> None:
    svc = manifest("Service", "giftstream")["spec"]
    _selects_the_pods(svc["selector"])
    [port] = svc["ports"]
    assert port["targetPort"] in {p["name"] for p in container()["ports"]}


def test_pod_disruption_budget_selects_the_deployments_pods_and_keeps_most_up() -> None:
    pdb = manifest("PodDisruptionBudget", "giftstream")
    assert pdb["apiVersion"] == "policy/v1"
    _selects_the_pods(pdb["spec"]["selector"]["matchLabels"])
    hpa = manifest("HorizontalPodAutoscaler", "giftstream")["spec"]
    assert pdb["spec"]["maxUnavailable"] < hpa["minReplicas"]


def test_autoscaler_scales_the_deployment_on_the_cpu_its_pods_request() -> None:
    hpa = manifest("HorizontalPodAutoscaler", "giftstream")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    d = deployment()
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        d["apiVersion"],
        d["kind"],
        d["metadata"]["name"],
    )
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert container()["resources"]["requests"]["cpu"]  # Utilization is relative to it
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_valkey_statefulset_keeps_an_aof_on_a_persistent_volume_behind_its_service() -> None:
    sts = manifest("StatefulSet", "valkey")
    [c] = sts["spec"]["template"]["spec"]["containers"]
    args = _valkey_args({"command": c["args"]})
    assert _option(args, "--appendonly") == "yes"
    assert _option(args, "--maxmemory-policy") == "noeviction"
    [mount] = c["volumeMounts"]
    assert mount["mountPath"] == _option(args, "--dir")
    assert mount["name"] in {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    svc = manifest("Service", "valkey")
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", ["valkey", "postgres"])
def test_only_giftstream_pods_may_reach_valkey_and_postgresql(name: str) -> None:
    policy = manifest("NetworkPolicy", name)["spec"]
    sts = manifest("StatefulSet", name)
    sts_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= sts_labels.items()
    [rule] = policy["ingress"]
    [source] = rule["from"]
    _selects_the_pods(source["podSelector"]["matchLabels"])
    [c] = sts["spec"]["template"]["spec"]["containers"]
    assert [p["port"] for p in rule["ports"]] == [p["containerPort"] for p in c["ports"]]


def test_postgresql_statefulset_keeps_its_data_on_a_volume_and_shares_the_pods_password() -> None:
    sts = manifest("StatefulSet", "postgres")
    [c] = sts["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("postgres:")
    [mount] = c["volumeMounts"]
    assert mount["mountPath"] == "/var/lib/postgresql"
    assert mount["name"] in {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    env = {e["name"]: e for e in c["env"]}
    server_password = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    pods_password = next(e for e in container()["env"] if e["name"] == "PGPASSWORD")
    assert server_password == pods_password["valueFrom"]["secretKeyRef"]
    data = manifest("ConfigMap", "giftstream-config")["data"]
    ledger = _database_url(data["GIFTSTREAM_DATABASE_URL"])
    assert (ledger.username, ledger.path) == (
        env["POSTGRES_USER"]["value"],
        "/" + env["POSTGRES_DB"]["value"],
    )
    svc = manifest("Service", "postgres")
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_ingress_routes_to_the_service_port_with_hour_long_proxy_timeouts() -> None:
    ingress = manifest("Ingress", "giftstream")
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) >= 3600
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    svc = manifest("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}


# -- documentation --------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_links_the_deploy_guide_and_the_scaling_note() -> None:
    links = set(LINK.findall((ROOT / "README.md").read_text()))
    assert {"deploy/README.md", "docs/scaling.md"} <= links


@pytest.mark.parametrize("doc", ["deploy/README.md", "docs/scaling.md"])
def test_relative_links_resolve_to_files_of_the_repository(doc: str) -> None:
    path = ROOT / doc
    links = [link for link in LINK.findall(path.read_text()) if "://" not in link]
    assert links
    for link in links:
        assert (path.parent / link).exists(), f"{doc}: {link}"


def test_the_scaleout_script_is_executable_bash() -> None:
    script = DEPLOY / "local-scaleout.sh"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
