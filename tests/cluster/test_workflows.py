"""Every cluster-backed behaviour of the contract, against the real API server, each function
calling as its own ServiceAccount with the Role from deploy/knative/rbac.yaml."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from common import jobs, runtime, store
from common.db import Database
from local.controlplane import ControlPlane
from tests.conftest import ADMIN_SECRET
from tests.provider import PROVIDER, start_body

COMPUTE = "/api/v1/operator/compute"
ADMIN = {"Admin": ADMIN_SECRET}
AsFunction = Callable[..., FlaskClient]


def workflow(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(
            plane.kubectl(
                "get", "workflows.oceanprotocol.com", name, "-n", "ocean-compute", "-o", "json"
            )
        )
    except RuntimeError as error:
        if "NotFound" in str(error):
            return None
        raise
    return found


@pytest.fixture
def job(as_function: AsFunction, db: Database, env_announced: dict[str, Any]) -> dict[str, Any]:
    response = as_function("start").post(COMPUTE, json=start_body("agreement-k8s"))
    assert response.status_code == 200, response.json
    started: dict[str, Any] = response.json[0]
    return started


def test_start_registers_the_workflow(
    control_plane: ControlPlane, db: Database, job: dict[str, Any]
) -> None:
    registered = workflow(control_plane, job["jobId"])
    assert registered is not None
    assert registered["metadata"]["labels"] == {"workflow": job["jobId"]}
    [[stored]] = db.query("SELECT workflow FROM jobs WHERE workflowid = :j", j=job["jobId"])
    document = json.loads(stored)
    assert registered["spec"] == document["spec"]
    assert "secret" not in registered["metadata"]  # the engine's secret stays in the database


def test_stop_marks_the_workflow(
    as_function: AsFunction, control_plane: ControlPlane, job: dict[str, Any]
) -> None:
    response = as_function("stop").put(COMPUTE, query_string=PROVIDER.signed(job_id=job["jobId"]))
    assert response.status_code == 200, response.json
    marked = workflow(control_plane, job["jobId"])
    assert marked is not None
    assert marked["metadata"]["annotations"]["oceanprotocol.com/stop-requested"] == "true"


def test_delete_removes_the_workflow(
    as_function: AsFunction, control_plane: ControlPlane, db: Database, job: dict[str, Any]
) -> None:
    stop = as_function("stop")
    response = stop.delete(COMPUTE, query_string=PROVIDER.signed(job_id=job["jobId"]))
    assert (response.status_code, response.json[0]["removed"]) == (200, 1)
    assert workflow(control_plane, job["jobId"]) is None
    again = stop.delete(COMPUTE, query_string=PROVIDER.signed(job_id=job["jobId"]))
    assert again.status_code == 200  # removing twice is removing once


def test_list_and_info(as_function: AsFunction, job: dict[str, Any]) -> None:
    listing = as_function("list")
    names = listing.get("/api/v1/operator/list", headers=ADMIN)
    assert names.status_code == 200 and job["jobId"] in names.json
    info = listing.get("/api/v1/operator/info", query_string={"jobId": job["jobId"]}, headers=ADMIN)
    assert info.status_code == 200
    assert (info.json["kind"], info.json["metadata"]["name"]) == ("WorkFlow", job["jobId"])
    missing = listing.get("/api/v1/operator/info", query_string={"jobId": "nope"}, headers=ADMIN)
    assert (missing.status_code, missing.json) == (
        404,
        {"error": "The jobId nope is not registered in namespace ocean-compute."},
    )


def test_logs_find_the_stage_pod_by_its_labels(
    as_function: AsFunction, control_plane: ControlPlane, job: dict[str, Any]
) -> None:
    """No kubelet runs here, so no pod has a log body: what is tested is that the pod is
    selected by workflow=<jobId>,component=<c> and its (empty) log read, and that another
    component, which has no pod, is a 404."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"algo-{job['jobId']}",
            "namespace": "ocean-compute",
            "labels": {"workflow": job["jobId"], "component": "algorithm"},
        },
        # Left unscheduled, as without a kubelet: the cluster tier may run a scheduler.
        "spec": {
            "schedulerName": "none",
            "containers": [{"name": "algo", "image": "python:3.11"}],
        },
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    result = as_function("result")
    logs = "/api/v1/operator/logs"

    found = result.get(
        logs, query_string={"jobId": job["jobId"], "component": "algorithm"}, headers=ADMIN
    )
    assert (found.status_code, found.mimetype, found.data) == (200, "text/plain", b"")
    absent = result.get(
        logs, query_string={"jobId": job["jobId"], "component": "publish"}, headers=ADMIN
    )
    assert (absent.status_code, absent.json) == (
        404,
        {"error": f"Pod with workflow={job['jobId']} and component=publish not found"},
    )


def test_a_cluster_failure_during_start_leaves_no_job(
    as_function: AsFunction,
    control_plane: ControlPlane,
    db: Database,
    env_announced: dict[str, Any],
) -> None:
    """The start function calling with an identity that may not create WorkFlows: the API server
    refuses, and the job row is rolled back, so no engine ever sees it."""
    refused = as_function("start", account="status").post(
        COMPUTE, json=start_body("agreement-refused")
    )
    assert (refused.status_code, refused.json) == (503, {"error": "Kubernetes API unavailable"})
    assert db.query("SELECT count(*) FROM jobs") == [[0]]
    assert db.query("SELECT * FROM announce('ocean-compute', '{}', 10)") == []


def test_the_stop_function_sweeps_workflows_of_the_original_engines_expired_jobs(
    as_function: AsFunction, control_plane: ControlPlane, db: Database, env_announced: Any
) -> None:
    """The original engine never deletes a WorkFlow: the service does, at the job's storage
    expiry, as the stop function's account (jobs.WORKFLOW_SWEEP is its chore). Jobs of our
    engine are left to it, and a job is swept once."""
    ids = []
    for agreement in ("sweep-original", "sweep-ours", "sweep-recent"):
        response = as_function("start").post(COMPUTE, json=start_body(agreement))
        assert response.status_code == 200, response.json
        ids.append(response.json[0]["jobId"])
    original, ours, recent = ids
    db.execute(
        """UPDATE jobs SET status = 70, datefinished = NOW() - interval '8 days'
           WHERE workflowid = ANY(CAST(:ids AS varchar[]))""",
        ids=[original, ours],
    )
    db.execute("UPDATE jobs SET engine = 'engine-x' WHERE workflowid = :j", j=ours)
    db.execute("UPDATE jobs SET status = 70, datefinished = NOW() WHERE workflowid = :j", j=recent)

    as_function("stop")  # the runtime now calls Kubernetes as the stop function's account
    sweep = runtime.current()
    jobs.sweep_workflows(sweep)
    assert workflow(control_plane, original) is None
    assert workflow(control_plane, ours) is not None
    assert workflow(control_plane, recent) is not None
    assert store.foreign_expired(sweep.db, 7 * 24 * 3600) == []  # marked: not swept again
