"""What runs workloads in a real cluster, for the tests' control plane (local.controlplane): the real
kube-controller-manager (Job controller, garbage collector, TTL, volume binding...) and
kube-scheduler, and kwok in the kubelet's place with one fake node.

kwok runs no container. Its rules (kwok-stages.yaml, beside this file) move each pod bound to the fake node
to Running, then to Succeeded or Failed with the exit code its image names. Everything else a
batch Job goes through is Kubernetes' own code: the Job's conditions, deadlines, pod failure
policy, TTL, ownership and garbage collection, scheduling (a pod asking more than the node has
stays Pending). What this cannot show: a container really running, an image being pulled.
"""

from __future__ import annotations

import time
from pathlib import Path

from local.controlplane import ControlPlane, spawn
from local.ports import free_ports

STAGES = Path(__file__).resolve().parent / "kwok-stages.yaml"
NODE = "kwok-node-0"
NODE_CPU, NODE_MEMORY = "16", "64Gi"  # what the fake node offers the scheduler
READY_TIMEOUT_SECONDS = 60
BINARIES = ("kube-controller-manager", "kube-scheduler", "kwok")

# Only the controllers a job's life touches (every one of them is Kubernetes' own).
CONTROLLERS = ",".join(
    (
        "job-controller",
        "garbage-collector-controller",
        "ttl-after-finished-controller",
        "persistentvolume-binder-controller",
        "pod-garbage-collector-controller",
        "namespace-controller",
        "serviceaccount-controller",
    )
)


def available(assets: Path) -> bool:
    return all((assets / name).is_file() for name in BINARIES)


def start(plane: ControlPlane, assets: Path) -> None:
    """Start the three beside `plane` (stopped with it) and wait until the fake node is Ready."""
    manager_port, scheduler_port, kwok_port = free_ports(3)
    kubeconfig = str(plane.admin_kubeconfig)
    plane.processes.insert(
        0,
        spawn(
            plane.workdir,
            "kube-controller-manager",
            [
                str(assets / "kube-controller-manager"),
                "--kubeconfig",
                kubeconfig,
                "--leader-elect=false",
                "--controllers",
                CONTROLLERS,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(manager_port),
                "--service-account-private-key-file",
                str(plane.pki["sa.key"]),
                "--root-ca-file",
                str(plane.ca_file),
                # Seconds, not the defaults' minutes: a test waits for what it triggers.
                "--concurrent-gc-syncs",
                "5",
            ],
        ),
    )
    plane.processes.insert(
        0,
        spawn(
            plane.workdir,
            "kube-scheduler",
            [
                str(assets / "kube-scheduler"),
                "--kubeconfig",
                kubeconfig,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(scheduler_port),
            ],
        ),
    )
    plane.processes.insert(
        0,
        spawn(
            plane.workdir,
            "kwok",
            [
                str(assets / "kwok"),
                "--kubeconfig",
                kubeconfig,
                "--config",
                str(STAGES),
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector",
                "kwok.x-k8s.io/node=fake",
                "--server-address",
                f"127.0.0.1:{kwok_port}",
                "--node-ip",
                "10.1.0.1",
                "--cidr",
                "10.1.0.0/16",
            ],
        ),
    )
    plane.kubectl("apply", "-f", "-", stdin=_node())
    _wait_node_ready(plane)
    # Admission taints every new node not-ready; the node lifecycle controller would lift it,
    # and then mark the node Unknown for want of a kubelet's heartbeats. It does not run here.
    plane.kubectl("taint", "node", NODE, "node.kubernetes.io/not-ready:NoSchedule-")


def _node() -> str:
    # Ephemeral storage as a kubelet reports its disk: stage pods request it (diskGB).
    resources = (
        f'{{cpu: "{NODE_CPU}", memory: {NODE_MEMORY}, ephemeral-storage: 100Gi, pods: "110"}}'
    )
    return f"""
apiVersion: v1
kind: Node
metadata:
  name: {NODE}
  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}}
  labels: {{kubernetes.io/hostname: {NODE}, kubernetes.io/os: linux, type: kwok}}
status:
  allocatable: {resources}
  capacity: {resources}
"""


def _wait_node_ready(plane: ControlPlane) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
    while time.monotonic() < deadline:
        plane.check_running()
        if plane.kubectl("get", "node", NODE, "-o", f"jsonpath={jsonpath}") == "True":
            return
        time.sleep(0.25)
    raise RuntimeError(f"the fake node {NODE} was not Ready after {READY_TIMEOUT_SECONDS} s")
