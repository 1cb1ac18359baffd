"""The engine's Kubernetes runner on a real Job controller, scheduler and garbage collector.

Only the kubelet is missing: kwok stands in for it and runs no container; its rules
(tests/cluster/kwok-stages.yaml) end a pod of image harness/exit:<code> with that exit code, keep a
harness/sleep pod running, and complete any other. Conditions, deadlines, the pod failure
policy, scheduling, ownership and garbage collection are Kubernetes' own code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from engine.kube import KubeHandle, KubeRunner
from engine.runner import Ending, Limits, Outcome, Stage, StageSpec
from local.controlplane import JOBS_NAMESPACE, ControlPlane
from tests.jobrows import wait_for

OUR_IMAGE = "ghcr.io/operator-service/operator-service:test"


@pytest.fixture
def api(workloads: ControlPlane) -> Iterator[Any]:
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(workloads.admin_kubeconfig), client_configuration=configuration
    )
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    results.mkdir()
    return work, results


@pytest.fixture
def make_runner(api: Any, roots: tuple[Path, Path]) -> Callable[..., KubeRunner]:
    def make(**options: Any) -> KubeRunner:
        work, results = roots
        return KubeRunner(
            api,
            namespaces=[JOBS_NAMESPACE],
            image=OUR_IMAGE,
            volumes={work: "operator-jobs", results: "operator-results"},
            **options,
        )

    return make


@pytest.fixture
def job_id(workloads: ControlPlane) -> str:
    """A job's id, with its WorkFlow registered the way the start function registers it."""
    name = os.urandom(16).hex()
    workloads.kubectl("apply", "-f", "-", stdin=workflow(name))
    return name


def workflow(name: str) -> str:
    return f"""
apiVersion: oceanprotocol.com/v1alpha
kind: WorkFlow
metadata: {{name: {name}, namespace: {JOBS_NAMESPACE}, labels: {{workflow: {name}}}}}
spec:
  metadata:
    stages: [{{algorithm: {{id: algo}}, compute: {{}}, input: [], output: {{}}}}]
"""


def spec(
    job_id: str,
    roots: tuple[Path, Path],
    image: str | None,
    *,
    stage: Stage = Stage.ALGORITHM,
    seconds: float = 60,
    cpus: int = 1,
) -> StageSpec:
    work, _ = roots
    data = work / job_id
    data.mkdir(exist_ok=True)
    return StageSpec(
        job_id=job_id,
        stage=stage,
        argv=("sh", "-c", "python $ALGO"),
        data=data,
        log=work / f"{job_id}-{stage}.log",
        limits=Limits(seconds=seconds, memory_bytes=256 * 1024**2, disk_bytes=1024**3, cpus=cpus),
        env={"ALGO": "/data/transformations/algorithm"},
        image=image,
        network=stage is Stage.CONFIGURE,  # as the engine runs it
        namespace=JOBS_NAMESPACE,
    )


def outcome_of(runner: KubeRunner, handle: KubeHandle, timeout: float = 60) -> Outcome:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = runner.poll(handle)
        if outcome is not None:
            return outcome
        time.sleep(0.1)
    raise AssertionError(f"no outcome for {handle.name} after {timeout} s")


def get_json(plane: ControlPlane, *args: str) -> Any:
    import json

    return json.loads(plane.kubectl("get", "-n", JOBS_NAMESPACE, "-o", "json", *args))


def pods_of(plane: ControlPlane, job_name: str) -> list[dict[str, Any]]:
    found = get_json(plane, "pods", "-l", f"batch.kubernetes.io/job-name={job_name}")
    items: list[dict[str, Any]] = found["items"]
    return items


def test_a_stage_that_exits_0_completes_as_a_job_owned_by_its_workflow(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    stage = spec(job_id, roots, "harness/exit:0")
    outcome = outcome_of(runner, runner.start(stage))
    assert (outcome.ending, outcome.exit_code) == (Ending.EXITED, 0)

    job = get_json(workloads, "job", f"{job_id}-algorithm")
    assert job["metadata"]["labels"]["workflow"] == job_id
    assert job["metadata"]["labels"]["component"] == "algorithm"
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("WorkFlow", job_id)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 60
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["ephemeral-storage"] == str(stage.limits.disk_bytes)
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    assert data["subPath"] == job_id  # its own folder of the jobs' claim, nothing else
    assert job["spec"]["template"]["metadata"]["labels"]["egress"] == "denied"
    assert "could not be read" in stage.log.read_text()  # kwok has no logs to give


def test_configure_and_publish_run_our_image(
    make_runner: Callable[..., KubeRunner], job_id: str, roots: tuple[Path, Path]
) -> None:
    runner = make_runner()
    configure = spec(job_id, roots, "harness/exit:5", stage=Stage.CONFIGURE)
    body = runner.manifest(configure, None)
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == OUR_IMAGE
    # Configure fetches: the deployment's egress policy selects its pods, the no-egress one not.
    assert body["spec"]["template"]["metadata"]["labels"]["egress"] == "allowed"
    outcome = outcome_of(runner, runner.start(configure))  # kwok completes our image's pods
    assert (outcome.ending, outcome.exit_code) == (Ending.EXITED, 0)


def test_a_failing_algorithm_fails_the_job_at_once_with_one_pod(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    outcome = outcome_of(runner, runner.start(spec(job_id, roots, "harness/exit:3")))
    assert (outcome.ending, outcome.exit_code) == (Ending.EXITED, 3)
    assert outcome.finished - outcome.started < 30  # not retried: no backoff in between
    assert len(pods_of(workloads, f"{job_id}-algorithm")) == 1
    job = get_json(workloads, "job", f"{job_id}-algorithm")
    failed = [c for c in job["status"]["conditions"] if c["type"] in ("FailureTarget", "Failed")]
    assert {c["reason"] for c in failed} == {"PodFailurePolicy"}


def test_the_deadline_ends_the_stage_as_a_timeout_with_its_job_gone(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    outcome = outcome_of(runner, runner.start(spec(job_id, roots, "harness/sleep:1", seconds=2)))
    assert outcome.ending is Ending.TIMEOUT
    assert outcome.finished - outcome.started >= 2
    # Nothing of the algorithm is left when publishing starts: no Job, no pod.
    assert get_json(workloads, "jobs", "-l", f"workflow={job_id}")["items"] == []
    assert pods_of(workloads, f"{job_id}-algorithm") == []


def test_a_stop_deletes_the_job_and_its_pod(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    handle = runner.start(spec(job_id, roots, "harness/sleep:1"))
    name = f"{job_id}-algorithm"
    wait_for(
        lambda: [p for p in pods_of(workloads, name) if p["status"].get("phase") == "Running"],
        what="the pod to run",
    )
    assert runner.poll(handle) is None
    outcome = runner.stop(handle)
    assert outcome.ending is Ending.STOPPED
    assert get_json(workloads, "jobs", "-l", f"workflow={job_id}")["items"] == []
    assert pods_of(workloads, name) == []


def test_a_pod_pending_too_long_ends_the_stage_with_the_reason(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    """It asks for more CPUs than the node has: the real scheduler cannot place it."""
    runner = make_runner(pending_seconds=3)
    outcome = outcome_of(runner, runner.start(spec(job_id, roots, "harness/exit:0", cpus=64)))
    assert outcome.ending is Ending.FAILED
    assert "Pending" in outcome.detail and "Unschedulable" in outcome.detail
    assert "Insufficient cpu" in outcome.detail
    assert get_json(workloads, "jobs", "-l", f"workflow={job_id}")["items"] == []


def test_a_second_engine_re_attaches_to_the_running_job(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    """What an engine restarted mid-stage, or the one taking its job over, does: the stage's
    Job is found by its name, and no second Job or pod is made."""
    first = make_runner()
    stage = spec(job_id, roots, "harness/sleep:1")
    first.start(stage)
    name = f"{job_id}-algorithm"
    wait_for(lambda: pods_of(workloads, name), what="the pod")
    uid = get_json(workloads, "job", name)["metadata"]["uid"]

    second = make_runner()
    handle = second.start(stage)
    assert second.poll(handle) is None
    assert get_json(workloads, "job", name)["metadata"]["uid"] == uid
    assert len(pods_of(workloads, name)) == 1
    assert second.stop(handle).ending is Ending.STOPPED


def test_a_finished_job_of_an_earlier_attempt_is_replaced(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    stage = spec(job_id, roots, "harness/exit:0", stage=Stage.CONFIGURE)
    outcome_of(runner, runner.start(stage))
    first = get_json(workloads, "job", f"{job_id}-configure")["metadata"]["uid"]
    outcome = outcome_of(runner, runner.start(stage))
    assert outcome.exit_code == 0
    assert get_json(workloads, "job", f"{job_id}-configure")["metadata"]["uid"] != first


def test_deleting_the_workflow_deletes_its_jobs_and_pods(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    runner.start(spec(job_id, roots, "harness/sleep:1"))
    name = f"{job_id}-algorithm"
    wait_for(lambda: pods_of(workloads, name), what="the pod")
    workloads.kubectl("delete", "-n", JOBS_NAMESPACE, "workflow", job_id)
    wait_for(
        lambda: (
            not get_json(workloads, "jobs", "-l", f"workflow={job_id}")["items"]
            and not pods_of(workloads, name)
        ),
        timeout=60,
        what="the garbage collector to delete the Job and its pod",
    )


def test_cleanup_deletes_every_job_of_the_job(
    workloads: ControlPlane,
    make_runner: Callable[..., KubeRunner],
    job_id: str,
    roots: tuple[Path, Path],
) -> None:
    runner = make_runner()
    runner.start(spec(job_id, roots, "harness/sleep:1"))
    runner.start(spec(job_id, roots, "harness/sleep:1", stage=Stage.PUBLISH))
    assert len(get_json(workloads, "jobs", "-l", f"workflow={job_id}")["items"]) == 2
    runner.cleanup(job_id)
    wait_for(
        lambda: not get_json(workloads, "jobs", "-l", f"workflow={job_id}")["items"],
        what="the Jobs to go",
    )


def test_an_api_server_out_of_reach_ends_the_stage_only_after_the_pending_time(
    tmp_path: Path,
) -> None:
    """Nothing answers on the port: the stage is retried at each look, then ends with the
    error's kind (the stage's log reaches the consumer: never the API server's address)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.retries = 0
    with client.ApiClient(configuration) as unreachable:
        runner = KubeRunner(
            unreachable,
            namespaces=[JOBS_NAMESPACE],
            image=OUR_IMAGE,
            volumes={tmp_path: "operator-jobs"},
            pending_seconds=2,
        )
        handle = runner.start(spec("a" * 32, (tmp_path, tmp_path), "harness/exit:0"))
        assert runner.poll(handle) is None  # not given up at once
        outcome = outcome_of(runner, handle, timeout=20)
    assert outcome.ending is Ending.FAILED
    assert outcome.detail.startswith("Kubernetes API unreachable (")
    assert "127.0.0.1" not in outcome.detail
    assert outcome.finished - outcome.started >= 2
