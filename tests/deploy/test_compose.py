"""deploy/'s docker compose files: services, the Valkey they run, commands, environment and start
order, read and checked against the code they run (Docker cannot run here; the readers are in
support/deploy.py)."""

import itertools
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import uvicorn

from giftstream.settings import ENV_PREFIX, Settings
from giftstream.store.connection import connect
from support.deploy import (
    DEPLOY,
    OTHER_ENV,
    ROOT,
    SETTING_NAMES,
    compose,
    database_url_parts,
    nginx,
    option_of,
    serve_args,
    service,
    valkey_args,
)

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
    args = valkey_args(svc)
    assert option_of(args, "--appendonly") == "yes"
    assert option_of(args, "--maxmemory-policy") == "noeviction"
    assert any(v.endswith(":/data") for v in svc["volumes"])
    assert svc["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]


def test_compose_cluster_nodes_are_cluster_enabled_and_announce_their_service_names() -> None:
    for name in ("valkey-1", "valkey-2", "valkey-3"):
        args = valkey_args(service(name, "docker-compose.cluster.yml"))
        assert option_of(args, "--cluster-enabled") == "yes"
        assert option_of(args, "--cluster-announce-hostname") == name
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


def test_compose_postgresql_is_the_official_image_on_a_volume_that_the_replicas_name() -> None:
    svc = service("postgres")
    assert svc["image"].startswith("postgres:")
    assert int(svc["image"].split(":")[1].split(".")[0]) >= 18  # what the embedded one runs
    # PostgreSQL 18's image keeps its data under /var/lib/postgresql (PGDATA in a subfolder).
    assert "postgres-data:/var/lib/postgresql" in svc["volumes"]
    env = svc["environment"]
    parts = database_url_parts(_environment("docker-compose.yml")["GIFTSTREAM_DATABASE_URL"])
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
