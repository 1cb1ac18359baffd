"""The engine with its Kubernetes runner: jobs started through the real start function (which
registers their WorkFlows), run by an `Engine` whose stages are batch Jobs on the real Job
controller, with kwok in the kubelet's place (tests/cluster/test_kube_runner.py says what that
leaves unproven). kwok runs nothing, so no stage writes a file: configure "succeeds" without
fetching, and there are no outputs to publish; each job still ends at 70 with its logs."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.cluster import api_client
from common.config import Settings
from common.db import Database
from engine.__main__ import build_runner
from engine.config import EngineConfig
from engine.engine import Engine
from engine.workflows import WorkflowMirror
from local.controlplane import JOBS_NAMESPACE, ControlPlane
from tests.conftest import ADMIN_SECRET, ENVIRONMENT
from tests.jobrows import job_row, log_of, published_path, wait_finished, wait_for
from tests.provider import PROVIDER, stage, start_body

COMPUTE = "/api/v1/operator/compute"
AsFunction = Callable[..., FlaskClient]


@pytest.fixture
def engine_settings(
    settings: Settings, workloads: ControlPlane, kubeconfigs: dict[str, Path], tmp_path: Path
) -> Settings:
    """The engine calls Kubernetes as its own ServiceAccount, with deploy/knative/rbac.yaml's
    Role: every test here also proves that Role is enough."""
    results = tmp_path / "results"
    results.mkdir()
    return settings.replace(
        cluster="kubeconfig", kubeconfig=kubeconfigs["engine"], results_root=results
    )


@pytest.fixture
def run_engine(
    engine_settings: Settings, tmp_path: Path, db: Database
) -> Iterator[Callable[..., Engine]]:
    """Start engines with the Kubernetes runner; each is closed at the end of the test."""
    running: list[tuple[Engine, threading.Thread, Database]] = []

    def run(
        image: str = "ghcr.io/operator-service/operator-service:test", **environment: Any
    ) -> Engine:
        """`image` runs configure and publish: kwok completes it unless it is a harness's."""
        raw = {
            "environments": [{"id": ENVIRONMENT, "maxJobs": 2, **environment}],
            "engine": {
                "leaseSeconds": 2,
                "heartbeatSeconds": 1,
                "pollSeconds": 1,
                "sweepSeconds": 1,
                "workRoot": str(tmp_path / "work"),
                "kubernetes": {
                    "image": image,
                    "jobsClaim": "operator-jobs",
                    "resultsClaim": "operator-results",
                    "pendingSeconds": 5,
                },
            },
        }
        config = EngineConfig.parse(raw, engine_settings, work_root=tmp_path / "work")
        config.work_root.mkdir(parents=True, exist_ok=True)
        engine_db = Database(engine_settings)
        engine = Engine(
            config,
            engine_db,
            build_runner(config, engine_settings),
            workflows=WorkflowMirror(api_client(engine_settings)),
        )
        thread = threading.Thread(target=engine.run, name="kube-engine")
        thread.start()
        running.append((engine, thread, engine_db))
        wait_for(lambda: db.query("SELECT 1 FROM envs WHERE namespace = :n", n=ENVIRONMENT))
        return engine

    yield run
    for engine, thread, engine_db in running:
        engine.close()
        thread.join(timeout=60)
        engine_db.close()


def start_job(as_function: AsFunction, image: str, tag: str, checksum: str = "") -> str:
    container = {"image": image, "tag": tag, "entrypoint": "python $ALGO", "checksum": checksum}
    algorithm = {"id": "did:op:algo", "rawcode": "print(1)", "container": container}
    body = start_body(os.urandom(8).hex(), workflow={"stages": [stage(algorithm=algorithm)]})
    response = as_function("start").post(COMPUTE, json=body)
    assert response.status_code == 200, response.json
    job_id: str = response.json[0]["jobId"]
    return job_id


def workflow_of(plane: ControlPlane, job_id: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(
            plane.kubectl("get", "workflows", job_id, "-n", JOBS_NAMESPACE, "-o", "json")
        )
    except RuntimeError as error:
        if "NotFound" in str(error):
            return None
        raise
    return found


def jobs_of(plane: ControlPlane, job_id: str, component: str = "") -> list[dict[str, Any]]:
    """The job's Jobs, or those of one of its stages."""
    selector = f"workflow={job_id}" + (f",component={component}" if component else "")
    found = plane.kubectl("get", "jobs", "-n", JOBS_NAMESPACE, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(found)["items"]
    return items


def test_a_job_runs_to_70_as_kubernetes_jobs_and_leaves_none(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine()
    job_id = start_job(as_function, "harness/exit", "0")
    row = wait_finished(db, job_id)
    assert (row["status"], row["stopreq"]) == (70, 0)
    configure = log_of(row, "configrationLog")
    assert "configure starts: Kubernetes Job" in configure
    algorithm = log_of(row, "algorithmLog")
    assert "image docker.io/harness/exit:0" in algorithm and "exited with code 0" in algorithm
    # Its receipt: the pods' usage is their requests times their wall time, and says so.
    [receipt] = [entry for entry in row["outputs"] if entry["type"] == "receipt"]
    stages = json.loads(published_path(receipt).read_text())["receipt"]["stages"]
    for used in stages.values():
        assert used["usageBasis"] == "requests x wall time", used
        assert abs(used["cpuMs"] - used["wallMs"]) <= 1, used  # one CPU requested
    assert stages["algorithm"]["peakMemoryBytes"] == 1024**3  # ramGB 1
    wait_for(lambda: not jobs_of(workloads, job_id), what="the finished job's Jobs to go")
    status = workflow_of(workloads, job_id)["status"]
    assert status == {"status": 70, "statusText": "Job finished", "stopreq": 0}


def test_a_workflow_is_deleted_when_its_results_expire(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(storageExpiry=1)
    job_id = start_job(as_function, "harness/exit", "0")
    wait_finished(db, job_id)
    wait_for(
        lambda: workflow_of(workloads, job_id) is None, what="the expired job's WorkFlow to go"
    )
    assert (
        job_id
        not in as_function("list")
        .get("/api/v1/operator/list", headers={"Admin": ADMIN_SECRET})
        .json
    )


def test_a_failing_algorithm_ends_the_job_at_once(
    as_function: AsFunction, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    job_id = start_job(as_function, "harness/exit", "1")
    row = wait_finished(db, job_id, timeout=30)
    assert row["status"] == 70
    assert "exited with code 1" in log_of(row, "algorithmLog")


def test_the_deadline_ends_the_algorithm_with_stopreq_2(
    as_function: AsFunction, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(maxJobDuration=3)
    job_id = start_job(as_function, "harness/sleep", "1")
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 2)
    assert "killed at its deadline" in log_of(row, "algorithmLog")


def test_a_stop_ends_the_running_algorithm(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine()
    job_id = start_job(as_function, "harness/sleep", "1")
    wait_for(lambda: job_row(db, job_id)["status"] == 40, what="the algorithm to run")
    wait_for(lambda: jobs_of(workloads, job_id, "algorithm"), what="its Job")
    stopped = as_function("stop").put(COMPUTE, query_string=PROVIDER.signed(job_id=job_id))
    assert stopped.status_code == 200, stopped.json
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert "stopped on request" in log_of(row, "algorithmLog")
    wait_for(lambda: not jobs_of(workloads, job_id), what="its Jobs to go")


def test_the_algorithms_pod_runs_its_image_by_digest_as_the_environment_says(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(pullPolicy="Always", imagePullSecrets=["registry-login"])
    digest = "sha256:" + "ab" * 32
    job_id = start_job(as_function, "harness/sleep", "1", checksum=digest)
    wait_for(lambda: jobs_of(workloads, job_id, "algorithm"), what="its Job")
    pod = jobs_of(workloads, job_id, "algorithm")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"docker.io/harness/sleep@{digest}"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry-login"}]
    stopped = as_function("stop").put(COMPUTE, query_string=PROVIDER.signed(job_id=job_id))
    assert stopped.status_code == 200, stopped.json
    configured = log_of(wait_finished(db, job_id, timeout=60), "configrationLog")
    assert f"runtime kubernetes: the node pulls image docker.io/harness/sleep@{digest}" in (
        configured
    )


def test_an_image_from_a_registry_not_allowed_is_refused_before_any_job_is_made(
    as_function: AsFunction,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(allowedRegistries=["ghcr.io/oceanprotocol"])
    job_id = start_job(as_function, "harness/exit", "0")
    row = wait_finished(db, job_id, timeout=60)
    configured = log_of(row, "configrationLog")
    assert "from none of the registries this environment allows" in configured
    assert "Kubernetes Job" not in configured  # configure's Job was never made
    assert "algorithmLog" not in [entry["type"] for entry in row["outputs"]]


def test_a_pod_that_cannot_be_scheduled_ends_the_job_with_the_reason(
    as_function: AsFunction, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(cpuNumber=64)  # the algorithm asks for 64 CPUs, the fake node has 16
    job_id = start_job(as_function, "harness/exit", "0")
    row = wait_finished(db, job_id, timeout=60)
    assert row["status"] == 70
    text = log_of(row, "algorithmLog")
    assert "stayed Pending" in text and "Insufficient cpu" in text


@pytest.mark.slow
def test_an_engine_restarted_mid_algorithm_takes_over_its_running_job(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    """The first engine shuts down while the algorithm's Job runs: the Job keeps running, and
    the engine started next resumes it (the same Job, not a second run) to its deadline."""
    first = run_engine(maxJobDuration=8)
    job_id = start_job(as_function, "harness/sleep", "1")
    wait_for(lambda: job_row(db, job_id)["status"] == 40, what="the algorithm to run")

    def algorithm_job() -> dict[str, Any] | None:
        found = jobs_of(workloads, job_id, "algorithm")
        return found[0] if found else None

    uid = wait_for(algorithm_job, what="its Job")["metadata"]["uid"]
    first.close()
    wait_for(
        lambda: db.query("SELECT leaseuntil < NOW() FROM jobs WHERE workflowid = :j", j=job_id)[0][
            0
        ],
        what="the first engine to let the job go",
    )  # at 40, its lease lapsed at once
    second = run_engine(maxJobDuration=8)
    wait_for(lambda: job_row(db, job_id)["engine"] == second.id, what="the takeover")
    still = algorithm_job()
    assert still is not None and still["metadata"]["uid"] == uid
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 2)
    text = log_of(row, "algorithmLog")
    assert "this engine takes it over" in text and "killed at its deadline" in text


def test_a_stop_while_configuring_ends_the_job(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(image="harness/sleep:1")  # configure never ends by itself
    job_id = start_job(as_function, "harness/exit", "0")
    wait_for(lambda: jobs_of(workloads, job_id), what="the configure Job")
    stopped = as_function("stop").put(COMPUTE, query_string=PROVIDER.signed(job_id=job_id))
    assert stopped.status_code == 200, stopped.json
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert "stopped on request while configuring" in log_of(row, "configrationLog")
    wait_for(lambda: not jobs_of(workloads, job_id), what="its Jobs to go")


def test_a_stop_while_publishing_ends_the_job_with_its_logs(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
    tmp_path: Path,
) -> None:
    """kwok's pods write nothing, so the test leaves the output that makes the engine publish,
    in the job's folder on the (stand-in) shared volume, while configure runs."""
    run_engine(image="harness/slow-publish:1")  # configure ends, publish does not
    job_id = start_job(as_function, "harness/exit", "0")
    folder = tmp_path / "work" / job_id
    wait_for(lambda: (folder / "ddos" / "workflow.json").exists(), what="configure to start")
    (folder / "outputs").mkdir()
    (folder / "outputs" / "result.txt").write_text("42\n")
    wait_for(lambda: job_row(db, job_id)["status"] == 60, timeout=60, what="publishing")
    wait_for(lambda: jobs_of(workloads, job_id, "publish"), what="the publish Job")
    stopped = as_function("stop").put(COMPUTE, query_string=PROVIDER.signed(job_id=job_id))
    assert stopped.status_code == 200, stopped.json
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert "publish stopped on request" in log_of(row, "publishLog")
    assert [e["type"] for e in row["outputs"]] == [
        "configrationLog",
        "algorithmLog",
        "publishLog",
        "receipt",
    ]
    wait_for(lambda: not jobs_of(workloads, job_id), what="its Jobs to go")


def test_two_engines_share_the_jobs_each_stage_one_job(
    as_function: AsFunction,
    db: Database,
    workloads: ControlPlane,
    run_engine: Callable[..., Engine],
) -> None:
    """Two replicas: each job is claimed by one of them, and each stage is one Job (its name
    is the jobId and the stage, which the API server keeps unique)."""
    engines = {run_engine(maxJobDuration=4).id, run_engine(maxJobDuration=4).id}
    jobs = [start_job(as_function, "harness/sleep", "1") for _ in range(4)]
    wait_for(
        lambda: all(job_row(db, job_id)["status"] == 40 for job_id in jobs),
        timeout=60,
        what="every algorithm to run",
    )
    for job_id in jobs:
        assert len(jobs_of(workloads, job_id, "algorithm")) == 1
    assert {job_row(db, job_id)["engine"] for job_id in jobs} == engines  # both took some
    for job_id in jobs:
        assert wait_finished(db, job_id, timeout=60)["stopreq"] == 2
