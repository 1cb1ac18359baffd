"""`make run` with the control plane built: a newcomer sees workflows registered in a real
API server without any cluster of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.controlplane import ControlPlane
from tests.local.test_run import launch
from tests.provider import start_body


@pytest.mark.slow
def test_the_local_run_registers_workflows_in_its_own_control_plane(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    # Depends on control_plane only for the skip-or-fail rule; the run starts its own.
    with launch(tmp_path / "data", control_plane="on") as run:
        assert "cluster: local control plane at https://127.0.0.1:" in run.output
        status, about, _ = run.call("GET", "/")
        assert about["cluster"] == "kubeconfig"
        body = start_body("local-k8s", provider=run.provider)
        status, started, _ = run.call("POST", "/api/v1/operator/compute", body=body)
        assert status == 200, started
        job_id = started[0]["jobId"]

        status, names, _ = run.call("GET", "/api/v1/operator/list", headers={"Admin": run.admin})
        assert (status, job_id in names) == (200, True)
        kubeconfig = tmp_path / "data" / "control-plane" / "kubeconfig-admin"
        got = control_plane.kubectl(
            "get", "workflows", "-n", "ocean-compute", "-o", "json", kubeconfig=kubeconfig
        )
        assert [item["metadata"]["name"] for item in json.loads(got)["items"]] == [job_id]
