"""opctl against the running local service, as a person would type it: from the folder that
holds the local run's .data, so the Provider key and admin secret are found by default."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from opclient.cli import Yaml
from tests import storage
from tests.local.test_run import LocalRun


def opctl(run: LocalRun, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opclient.cli", "--url", run.url, *args],
        cwd=cwd or run.data.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def opctl_json(run: LocalRun, *args: str) -> Any:
    done = opctl(run, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def job_id(local_run: LocalRun) -> str:
    [job] = opctl_json(
        local_run,
        "start",
        "--image",
        "python",
        "--tag",
        "3.11",
        "--entrypoint",
        "python $ALGO",
        "--algorithm-url",
        "https://example.org/a.py",
        "--input",
        "https://example.org/data.csv",
    )
    return str(job["jobId"])


def test_start_from_flags_and_status_as_a_table(local_run: LocalRun, job_id: str) -> None:
    done = opctl(local_run, "status", job_id)
    assert done.returncode == 0
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["jobId", "status", "statusText"]
    assert row.split()[:4] == [job_id, "1", "Warming", "up"]
    # Waiting (this run has no engine): its place in the queue and its likely start, as dates.
    assert header.split()[-2:] == ["queuePosition", "estimatedStart"]
    assert row.split()[-3].isdigit() and row.split()[-2].count("-") == 2


def test_start_from_a_workflow_file(local_run: LocalRun, tmp_path: Path) -> None:
    workflow = {
        "stages": [
            {
                "index": 0,
                "input": [{"id": "did:op:x", "url": ["https://e/x"]}],
                "algorithm": {"id": "did:op:a", "rawcode": "print(1)"},
                "compute": {},
                "output": {},
            }
        ]
    }
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    [job] = opctl_json(local_run, "start", str(tmp_path / "wf.json"), "--agreement-id", "from-file")
    assert (job["agreementId"], job["algoDID"], job["inputDID"]) == (
        "from-file",
        "did:op:a",
        ["did:op:x"],
    )


def test_stop_and_delete(local_run: LocalRun, job_id: str) -> None:
    [stopped] = opctl_json(local_run, "stop", job_id)
    assert (stopped["status"], stopped["stopreq"]) == (70, 1)
    [removed] = opctl_json(local_run, "delete", job_id)
    assert removed["removed"] == 1


def test_result_downloads_by_index(local_run: LocalRun, job_id: str, tmp_path: Path) -> None:
    with storage.serve({"out.csv": b"x,y\n1,2\n"}) as store:
        local_run.engine_finishes(job_id, f"{store.url}/out.csv", 8)
        saved = opctl_json(local_run, "result", job_id, "0", "-o", str(tmp_path / "got.csv"))
    assert saved == {"file": str(tmp_path / "got.csv"), "bytes": 8}
    assert (tmp_path / "got.csv").read_bytes() == b"x,y\n1,2\n"


def test_admin_and_unsigned_commands(local_run: LocalRun, job_id: str) -> None:
    assert opctl_json(local_run, "init") == {"status": "database schema is up to date"}
    assert job_id in [job["jobId"] for job in opctl_json(local_run, "running")]
    assert [env["id"] for env in opctl_json(local_run, "environments")] == ["ocean-compute"]
    # The cluster is off in this run: the service says so, and opctl exits 3.
    for args in (["list"], ["info", job_id], ["logs", job_id, "algorithm"]):
        done = opctl(local_run, *args)
        assert done.returncode == 3
        assert (
            done.stderr.strip()
            == "opctl: no Kubernetes cluster is configured for this service (HTTP 503)"
        )


def test_wrong_owner_and_unknown_job_are_refused(local_run: LocalRun, job_id: str) -> None:
    other = "0x" + "12" * 20
    done = opctl(local_run, "result", job_id, "0", "--owner", other)
    assert (done.returncode, done.stderr.strip()) == (
        1,
        f"opctl: Owner {other} mismatch for job {job_id} (HTTP 404)",
    )
    for command in ("status", "stop"):
        done = opctl(local_run, command, "f" * 32)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.strip() == f"opctl: no such job: {'f' * 32} (for this owner)"
    done = opctl(local_run, "result", "f" * 32, "0")
    assert done.returncode == 1
    assert "mismatch for job ffffffff" in done.stderr


def test_json_goes_before_or_after_the_command_and_times_read_as_times(
    local_run: LocalRun, job_id: str
) -> None:
    after = opctl(local_run, "status", job_id, "--json")
    assert after.returncode == 0 and json.loads(after.stdout)[0]["jobId"] == job_id
    [env] = json.loads(opctl(local_run, "environments", "--json").stdout)
    table = opctl(local_run, "environments").stdout
    seen = datetime.datetime.fromtimestamp(float(env["lastSeen"]), datetime.UTC)
    assert seen.strftime("%Y-%m-%d %H:%M:%S") in table and env["lastSeen"] not in table
    version = opctl(local_run, "--version")
    assert version.stdout.strip() == f"opctl {metadata.version('operator-service')}"


def test_info_is_yaml_without_managed_fields() -> None:
    shown = Yaml({"metadata": {"name": "j", "managedFields": [{"manager": "x"}]}, "spec": {}})
    assert shown.text() == "metadata:\n  name: j\nspec: {}\n"


def test_without_a_key_opctl_says_where_one_comes_from(local_run: LocalRun, tmp_path: Path) -> None:
    done = opctl(local_run, "status", "x" * 32, cwd=tmp_path)  # no .data here, no variables
    assert done.returncode == 2
    assert "--key-file" in done.stderr and "$OPCTL_KEY_FILE" in done.stderr


def test_a_bad_key_file_is_a_usage_error(local_run: LocalRun, tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("not a key")
    done = opctl(local_run, "--key-file", str(tmp_path / "bad.key"), "status", "x" * 32)
    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert "does not hold a private key" in done.stderr


def test_a_key_outside_the_allowlist_is_refused(local_run: LocalRun, tmp_path: Path) -> None:
    (tmp_path / "other.key").write_text("0x" + "42" * 32)
    done = opctl(local_run, "--key-file", str(tmp_path / "other.key"), "status", "x" * 32)
    assert done.returncode == 1
    assert "is not authorized to use this service" in done.stderr


def test_an_unreachable_service_exits_3(local_run: LocalRun) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opclient.cli", "--url", "http://127.0.0.1:9", "environments"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3 and done.stderr.startswith("opctl: cannot reach http://127.0.0.1:9")
