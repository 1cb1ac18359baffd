"""deploy/knative agrees with the route table and with itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from common import routes

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
