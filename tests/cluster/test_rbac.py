"""Least privilege, proven on the real API server: each function's ServiceAccount may make
exactly the calls that function makes, and a call outside them is refused with 403."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from common.cluster import KubeCluster
from common.config import Settings
from common.jobs import cluster_object, workflow_document
from local.controlplane import ControlPlane
from tests.provider import stage

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
RESOURCES = (
    ("oceanprotocol.com", "workflows", ""),
    ("oceanprotocol.com", "workflows", "status"),
    ("batch", "jobs", ""),
    ("", "pods", ""),
    ("", "pods", "log"),
    ("", "secrets", ""),
    ("", "configmaps", ""),
)
NEEDS = {
    "start": {("create", "workflows", ""), ("delete", "workflows", "")},
    "stop": {("patch", "workflows", ""), ("delete", "workflows", "")},
    "list": {("get", "workflows", ""), ("list", "workflows", "")},
    "result": {("list", "pods", ""), ("get", "pods", "log")},
    "status": set(),
    "admin_init": set(),
    # The engine's Kubernetes runner and its WorkFlow mirror (engine/kube.py, workflows.py).
    "engine": {
        ("create", "jobs", ""),
        ("get", "jobs", ""),
        ("delete", "jobs", ""),
        ("deletecollection", "jobs", ""),
        ("list", "pods", ""),
        ("get", "pods", "log"),
        ("get", "workflows", ""),
        ("delete", "workflows", ""),
        ("patch", "workflows", "status"),
    },
}


def api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def allowed(kubeconfig: Path, namespace: str) -> set[tuple[str, str, str]]:
    reviews = client.AuthorizationV1Api(api_client(kubeconfig))
    granted = set()
    for group, resource, subresource in RESOURCES:
        for verb in VERBS:
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        namespace=namespace,
                        verb=verb,
                        group=group,
                        resource=resource,
                        subresource=subresource or None,
                    )
                )
            )
            if reviews.create_self_subject_access_review(review).status.allowed:
                granted.add((verb, resource, subresource))
    return granted


@pytest.mark.parametrize("function", sorted(NEEDS))
def test_each_account_may_do_exactly_what_its_function_does(
    kubeconfigs: dict[str, Path], function: str
) -> None:
    assert allowed(kubeconfigs[function], "ocean-compute") == NEEDS[function]
    assert allowed(kubeconfigs[function], "ocean-operator") == set()
    assert allowed(kubeconfigs[function], "default") == set()


def test_each_allowed_call_works(
    kubeconfigs: dict[str, Path], control_plane: ControlPlane, base_settings: Settings
) -> None:
    """The calls of common.cluster, each made as the account of the function that makes it."""

    def cluster(function: str) -> KubeCluster:
        return KubeCluster(
            base_settings.replace(cluster="kubeconfig", kubeconfig=kubeconfigs[function])
        )

    document = cluster_object(workflow_document("rbac0job", "ocean-compute", stage(), 1))
    cluster("start").register(document)
    cluster("start").remove("rbac0job", "ocean-compute")  # start's rollback after a failed commit
    cluster("start").register(document)
    assert "rbac0job" in cluster("list").workflow_names("ocean-compute")
    assert cluster("list").workflow("rbac0job", "ocean-compute")["metadata"]["name"] == "rbac0job"
    cluster("stop").mark_stopped("rbac0job", "ocean-compute")
    cluster("stop").remove("rbac0job", "ocean-compute")
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "rbac0job-configure",
            "namespace": "ocean-compute",
            "labels": {"workflow": "rbac0job", "component": "configure"},
        },
        # Left unscheduled, as without a kubelet: the cluster tier may run a scheduler.
        "spec": {"schedulerName": "none", "containers": [{"name": "c", "image": "busybox"}]},
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    assert cluster("result").pod_log("rbac0job", "configure", "ocean-compute") == ""


def test_a_call_outside_the_role_is_forbidden(kubeconfigs: dict[str, Path]) -> None:
    core = client.CoreV1Api(api_client(kubeconfigs["start"]))
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_pod("ocean-compute")
    assert refused.value.status == 403
    objects = client.CustomObjectsApi(api_client(kubeconfigs["result"]))
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(
            "oceanprotocol.com",
            "v1alpha",
            "ocean-compute",
            "workflows",
            cluster_object(workflow_document("rbac1job", "ocean-compute", stage(), 1)),
        )
    assert refused.value.status == 403


def test_the_engine_may_not_go_past_its_role(kubeconfigs: dict[str, Path]) -> None:
    """It makes Jobs, never bare pods; it never reads Secrets; it writes a WorkFlow's status,
    never the WorkFlow; and nothing outside the jobs' namespace."""
    api = api_client(kubeconfigs["engine"])
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    refusals = [
        lambda: client.CoreV1Api(api).create_namespaced_pod("ocean-compute", pod),
        lambda: client.CoreV1Api(api).list_namespaced_secret("ocean-compute"),
        lambda: client.BatchV1Api(api).list_namespaced_job("ocean-operator"),
        lambda: client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "oceanprotocol.com", "v1alpha", "ocean-compute", "workflows", "x", {"spec": {}}
        ),
    ]
    for call in refusals:
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403
