"""deploy/knative agrees with the route table and with itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from common import routes
from common.config import Settings
from engine.config import EngineConfig

KNATIVE = Path(__file__).resolve().parents[2] / "deploy" / "knative"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KNATIVE / name).read_text()) if doc]


def test_the_checked_in_manifests_are_what_the_route_table_generates() -> None:
    spec = importlib.util.spec_from_file_location("generate", KNATIVE / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.main(["--check"]) == 0


def test_routing_covers_exactly_the_route_table() -> None:
    [route] = load("routing.yaml")
    services = {doc["metadata"]["name"]: doc for doc in load("services.yaml")}
    routed = set()
    for rule in route["spec"]["rules"]:
        [backend] = rule["backendRefs"]
        target = services[backend["name"]]["spec"]["template"]["spec"]["containers"][0]
        function = {e["name"]: e["value"] for e in target["env"]}["FUNCTION_TARGET"]
        routed |= {(m["method"], m["path"]["value"], function) for m in rule["matches"]}
    assert routed == {(r.method, r.path, r.function) for r in routes.ROUTES if r.public}
    assert ("GET", "/metrics", "status") not in routed  # scraped in the cluster, not public


def test_prometheus_scrapes_every_function_pod_where_it_serves_metrics() -> None:
    for service in load("services.yaml"):
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        [container] = template["spec"]["containers"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_every_pod_at_its_maximum_scale_fits_postgresql_default_connections() -> None:
    """A pod holds a connection per thread; all of them together must leave room in
    PostgreSQL's default max_connections (100) for the engine and the superusers (docs/deploying.md)."""
    held = 0
    for service in load("services.yaml"):
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        pods = int(annotations["autoscaling.knative.dev/max-scale"])
        assert pods >= int(annotations["autoscaling.knative.dev/min-scale"]) >= 1
        held += pods * template["spec"]["containerConcurrency"]
    assert held <= 80


def test_each_function_has_a_service_running_as_its_own_account() -> None:
    accounts = {
        doc["metadata"]["name"] for doc in load("rbac.yaml") if doc["kind"] == "ServiceAccount"
    }
    services = load("services.yaml")
    assert len(services) == len(routes.FUNCTIONS)
    root = KNATIVE.parents[1]
    for service in services:
        pod = service["spec"]["template"]["spec"]
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert pod["serviceAccountName"] in accounts
        assert pod["serviceAccountName"] == "operator-" + env["FUNCTION_TARGET"].replace("_", "-")
        assert (root / env["FUNCTION_SOURCE"].removeprefix("/app/")).is_file()
        assert pod["containerConcurrency"] == int(env["THREADS"])


def test_the_engine_runs_its_own_config_as_its_own_account_on_the_shared_claims() -> None:
    """The Deployment, its engine.yaml (parsed as the engine parses it), the claims and the
    result function agree on every name and path."""
    documents = load("engine.yaml")
    [config_map] = [d for d in documents if d["kind"] == "ConfigMap"]
    settings = Settings.from_env({"POSTGRES_HOST": "db"}, serves_api=False)
    raw = yaml.safe_load(config_map["data"]["engine.yaml"])
    config = EngineConfig.parse(raw, settings, work_root=Path("/unused"))
    kube = config.kubernetes
    assert kube is not None

    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    accounts = {d["metadata"]["name"] for d in load("rbac.yaml") if d["kind"] == "ServiceAccount"}
    assert pod["serviceAccountName"] == "operator-engine" in accounts
    assert deployment["spec"]["replicas"] == 2
    [container] = pod["containers"]
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod["volumes"]
        if "persistentVolumeClaim" in volume
    }
    mounted = {
        claims[m["name"]]: m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims
    }
    assert mounted == {
        kube.jobs_claim: str(config.work_root),
        kube.results_claim: str(config.results_root),
    }
    assert container["command"][container["command"].index("--work-root") + 1] == str(
        config.work_root
    )
    assert "POSTGRES_PASSWORD" in {e["name"] for e in container["env"]}
    assert "ALLOWED_ADMINS" not in str(container)  # the engine gets no API secret
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == kube.uid  # the stage pods' uid

    # Each claim exists where it is mounted: the service's namespace and the jobs'.
    claimed = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in documents
        if d["kind"] == "PersistentVolumeClaim"
    }
    for claim in (kube.jobs_claim, kube.results_claim):
        assert {("ocean-operator", claim), ("ocean-compute", claim)} <= claimed

    [result] = [s for s in load("services.yaml") if s["metadata"]["name"] == "operator-result"]
    [function] = result["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in function["env"]}
    assert env["RESULTS_ROOT"] == str(config.results_root)
    assert {"name": "results", "mountPath": str(config.results_root), "readOnly": True} in function[
        "volumeMounts"
    ]


def test_stage_pods_get_no_ingress_and_denied_egress_when_labelled() -> None:
    policies = {
        d["metadata"]["name"]: d["spec"]
        for d in load("engine.yaml")
        if d["kind"] == "NetworkPolicy"
    }
    ingress = policies["operator-stages-no-ingress"]
    assert ingress["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "operator-engine"
    }
    assert ingress["policyTypes"] == ["Ingress"] and "ingress" not in ingress
    egress = policies["operator-stages-no-egress"]
    assert egress["podSelector"]["matchLabels"] == {"egress": "denied"}
    assert egress["policyTypes"] == ["Egress"] and "egress" not in egress


def test_stage_pods_allowed_egress_reach_neither_private_networks_nor_metadata() -> None:
    [policy] = [
        d["spec"]
        for d in load("engine.yaml")
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "operator-stages-egress"
    ]
    assert policy["podSelector"]["matchLabels"] == {"egress": "allowed"}
    internet, dns = policy["egress"]
    v4, v6 = (block["ipBlock"] for block in internet["to"])
    assert (v4["cidr"], v6["cidr"]) == ("0.0.0.0/0", "::/0")
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
        assert private in v4["except"]
    assert "169.254.0.0/16" in v4["except"] and "127.0.0.0/8" in v4["except"]
    assert {"fc00::/7", "fe80::/10", "::1/128"} <= set(v6["except"])
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_the_chores_run_on_a_schedule_as_the_stop_functions_account() -> None:
    [cron] = [d for d in load("engine.yaml") if d["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "operator-stop"  # the account that deletes WorkFlows
    assert pod["containers"][0]["command"] == ["python", "-m", "common.chores"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
