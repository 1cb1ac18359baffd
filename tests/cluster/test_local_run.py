"""`make run` with the control plane built: a newcomer sees workflows registered in a real
API server without any cluster of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.controlplane import ControlPlane
from tests.jobrows import wait_for
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


@pytest.mark.slow
def test_a_killed_local_run_leaves_nothing_running(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """SIGKILL runs no atexit handler: the run's reaper (local/reaper.py) stops PostgreSQL,
    etcd, kube-apiserver and the engine all the same."""
    with launch(tmp_path / "data", control_plane="on", engine="auto") as run:
        started = _descendants(run.process.pid)
        postmaster = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
        names = {_name(pid) for pid in started}
        assert {"etcd", "kube-apiserver"} <= names, names
        run.process.kill()
        run.process.wait()
        wait_for(
            lambda: not any(_running(pid) for pid in [*started, postmaster]),
            30,
            "what the run started to stop",
        )


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _name(pid: int) -> str:
    try:
        return Path(Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]).name
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
