"""Readers of deploy/ for its tests (tests/deploy/): the Dockerfile, the compose files, nginx.conf
and the Kubernetes manifests, parsed into what the tests compare with the code they run."""

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]
from starlette.routing import Route, WebSocketRoute

from giftstream import cli
from giftstream.app import routes
from giftstream.settings import ENV_PREFIX, Settings

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


def valkey_args(svc: dict[str, Any]) -> list[str]:
    command: list[str] = svc["command"]
    assert command[0] == "valkey-server"
    return command[1:]


def option_of(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def database_url_parts(url: str) -> Any:
    """The parts of a ledger URL of the deploy files: PostgreSQL's, with no password in it."""
    settings = Settings.from_env({"GIFTSTREAM_DATABASE_URL": url})
    assert settings.database_url == url
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert parts.password is None  # PGPASSWORD, from a secret
    return parts
