"""The cluster tier: a real etcd + kube-apiserver (local.controlplane), with the project's CRD
and RBAC applied, and each function calling as its own ServiceAccount.

Without the binaries the tier is skipped, saying how to build them; with REQUIRE_CLUSTER_TIER=1
(as CI sets it) a skip is a failure instead."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from common import runtime
from common.config import Settings
from common.runtime import Runtime
from local import controlplane
from local.controlplane import ControlPlane
from tests.cluster import workloads as workloads_module
from tests.cluster.planes import service_account_kubeconfig
from tests.conftest import function_client

ACCOUNTS = {
    "start": "operator-start",
    "stop": "operator-stop",
    "status": "operator-status",
    "list": "operator-list",
    "result": "operator-result",
    "admin_init": "operator-admin-init",
    "engine": "operator-engine",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    assets = controlplane.find_assets()
    if assets is None:
        why = "no etcd/kube-apiserver: run `make testbin` or set KUBEBUILDER_ASSETS"
        if os.environ.get("REQUIRE_CLUSTER_TIER") == "1":
            pytest.fail(f"cluster tier required but unavailable: {why}")
        pytest.skip(why)
    plane = controlplane.start(assets, tmp_path_factory.mktemp("control-plane"))
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def kubeconfigs(control_plane: ControlPlane) -> dict[str, Path]:
    return {
        name: service_account_kubeconfig(control_plane, account)
        for name, account in ACCOUNTS.items()
    }


@pytest.fixture
def as_function(
    rt: Runtime, settings: Settings, kubeconfigs: dict[str, Path]
) -> Iterator[Callable[..., FlaskClient]]:
    """as_function("stop") is the stop function calling Kubernetes as its own ServiceAccount;
    as_function("start", account="list") lends it another function's identity."""
    built: list[Runtime] = []

    def client(name: str, account: str | None = None) -> FlaskClient:
        identity = settings.replace(cluster="kubeconfig", kubeconfig=kubeconfigs[account or name])
        built.append(Runtime.build(identity))
        runtime.install(built[-1])
        return function_client(name)

    yield client
    for each in built:
        each.db.close()


@pytest.fixture(scope="session")
def workloads(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with what runs workloads beside it: the real kube-controller-manager
    and kube-scheduler, and kwok in the kubelet's place with one fake node (tests/cluster/workloads.py).
    Claims for the jobs' folders and the results are bound to static volumes, as a cluster's
    provisioner would bind them."""
    assets = controlplane.find_assets()
    assert assets is not None  # control_plane found them
    if not workloads_module.available(assets):
        why = "no kube-controller-manager/kube-scheduler/kwok: run `make testbin`"
        if os.environ.get("REQUIRE_CLUSTER_TIER") == "1":
            pytest.fail(f"cluster tier required but unavailable: {why}")
        pytest.skip(why)
    workloads_module.start(control_plane, assets)
    for claim in CLAIMS:
        control_plane.kubectl("apply", "-f", "-", stdin=static_claim(claim))
    control_plane.kubectl(
        "wait",
        "--for=jsonpath={.status.phase}=Bound",
        "--timeout=60s",
        "-n",
        controlplane.JOBS_NAMESPACE,
        *(f"pvc/{claim}" for claim in CLAIMS),
    )
    return control_plane


CLAIMS = ("operator-jobs", "operator-results")


def static_claim(name: str) -> str:
    """A PersistentVolume and the claim that binds to it (no provisioner runs here)."""
    return f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadWriteMany]
  storageClassName: static
  hostPath: {{path: /srv/{name}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {controlplane.JOBS_NAMESPACE}}}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: static
  volumeName: {name}
  resources: {{requests: {{storage: 10Gi}}}}
"""
