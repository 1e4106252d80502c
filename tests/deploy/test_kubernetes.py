"""deploy/k8s/: every manifest parses, and the selectors, ports, probes and names that tie the
objects together agree, read and checked against the code they run (Kubernetes cannot run here;
the readers are in support/deploy.py)."""

import json
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from giftstream.app import allowed_hosts
from giftstream.settings import ENV_PREFIX, Settings
from support.deploy import (
    K8S,
    OTHER_ENV,
    SETTING_NAMES,
    container,
    database_url_parts,
    deployment,
    get_routes,
    instructions,
    load_yaml,
    manifest,
    manifests,
    option_of,
    serve_args,
    valkey_args,
)

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
    ledger = database_url_parts(settings.database_url)
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
    args = valkey_args({"command": c["args"]})
    assert option_of(args, "--appendonly") == "yes"
    assert option_of(args, "--maxmemory-policy") == "noeviction"
    [mount] = c["volumeMounts"]
    assert mount["mountPath"] == option_of(args, "--dir")
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
    ledger = database_url_parts(data["GIFTSTREAM_DATABASE_URL"])
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
