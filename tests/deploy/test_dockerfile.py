"""deploy/Dockerfile and its build context: stages, user, command, environment, volume and health
check, read and checked against the code they run (Docker cannot run here; the readers are in
support/deploy.py)."""

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from giftstream import cli
from giftstream.settings import ENV_PREFIX, Settings
from support import ServerProcess, free_port
from support.deploy import (
    DEPLOY,
    ROOT,
    SETTING_NAMES,
    container,
    deployment,
    get_routes,
    healthcheck_command,
    image_command,
    image_env,
    instructions,
    seconds,
    serve_args,
    service,
)

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
