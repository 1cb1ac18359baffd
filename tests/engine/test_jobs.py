"""Jobs run by our engine, end to end: started through the real start function, executed in
the real sandbox, read back through the real status and getResult functions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests import storage
from tests.engine.conftest import (
    Dirs,
    algorithm_stage,
    get_result,
    signed_status,
    start_job,
)
from tests.engine.test_receipts import receipt_of
from tests.jobrows import log_of, published_path, wait_finished, wait_for

SUM_COLUMN = """
import json, os, pathlib
rows = pathlib.Path("/data/inputs/0/0").read_text().splitlines()[1:]
total = sum(int(line.split(",")[1]) for line in rows)
pathlib.Path(os.environ["OUTPUTS"], "sum.txt").write_text(f"{total}\\n")
print("dids", os.environ["DIDS"], "algo", os.environ["TRANSFORMATION_DID"])
"""
CSV = b"name,value\na,1\nb,2\nc,39\n"


def test_a_job_runs_through_every_stage_and_its_output_is_served(
    start: FlaskClient,
    status: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    run_engine()
    with storage.serve({"data.csv": CSV}) as server:
        job_id = start_job(start, algorithm_stage(SUM_COLUMN, inputs=[f"{server.url}/data.csv"]))
        row = wait_finished(db, job_id)

    assert status_history(job_id) == [20, 30, 40, 60, 70]
    shown = signed_status(status, job_id)
    assert (shown["status"], shown["statusText"], shown["stopreq"]) == (70, "Job finished", 0)
    assert shown["dateFinished"] is not None
    types = [entry["type"] for entry in shown["results"]]
    assert types == ["output", "configrationLog", "algorithmLog", "publishLog", "receipt"]
    assert all("url" not in entry for entry in shown["results"])

    output = shown["results"][0]
    assert (output["filename"], output["filesize"]) == ("sum.txt", 3)
    downloaded = get_result(result, job_id, 0)
    assert (downloaded.status_code, downloaded.data) == (200, b"42\n")
    assert output["sha256"] == hashlib.sha256(b"42\n").hexdigest()
    for index, entry in enumerate(shown["results"]):
        body = get_result(result, job_id, index).data
        assert (len(body), hashlib.sha256(body).hexdigest()) == (entry["filesize"], entry["sha256"])

    algorithm_log = log_of(row, "algorithmLog")
    assert 'dids ["did:op:in0"] algo did:op:algo' in algorithm_log
    assert "exited with code 0" in algorithm_log
    assert (
        "runtime host (the environment's runtime): image docker.io/library/python:3.11 not used"
        in algorithm_log
    )


def test_a_failing_algorithm_ends_the_job_with_its_exit_code_in_the_log(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    run_engine()
    job_id = start_job(start, algorithm_stage("import sys\nprint('giving up')\nsys.exit(3)"))
    row = wait_finished(db, job_id)
    assert status_history(job_id) == [20, 30, 40, 60, 70]
    assert row["stopreq"] == 0
    text = log_of(row, "algorithmLog")
    assert "giving up" in text and "exited with code 3" in text
    assert [e["type"] for e in row["outputs"]] == [
        "configrationLog",
        "algorithmLog",
        "publishLog",
        "receipt",
    ]


def test_an_unreachable_algorithm_url_is_32_and_the_job_ends(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    run_engine()
    with storage.serve({}) as server:
        missing = algorithm_stage("", url=f"{server.url}/nothing.py?token=secret")
        job_id = start_job(start, missing)
        row = wait_finished(db, job_id)
    assert status_history(job_id) == [20, 32, 60, 70]
    text = log_of(row, "configrationLog")
    assert f"algorithm {server.url}/nothing.py" in text and "404" in text
    assert "secret" not in text  # signed URLs keep their query out of the log


def test_an_unreachable_input_is_31_and_the_job_ends(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    run_engine()
    with storage.serve({}) as server:
        job_id = start_job(start, algorithm_stage("print(1)", inputs=[f"{server.url}/gone.csv"]))
        row = wait_finished(db, job_id)
    assert status_history(job_id) == [20, 31, 60, 70]
    assert "input 0" in log_of(row, "configrationLog")


def test_remote_inputs_are_31_naming_the_provider(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    remote = algorithm_stage("print(1)")
    remote["input"] = [{"id": "did:op:r", "remote": {"txId": "0x1"}, "index": 0}]
    row = wait_finished(db, start_job(start, remote))
    assert row["status"] == 70
    assert "remote inputs need a Provider" in log_of(row, "configrationLog")


@pytest.mark.parametrize("sandbox_tool", ["bwrap", "unshare"])  # inputRoots lie under /tmp
def test_file_inputs_come_only_from_the_allowed_roots(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine], dirs: Dirs
) -> None:
    run_engine()
    (dirs.inputs / "allowed.csv").write_bytes(CSV)
    allowed = start_job(
        start,
        algorithm_stage(SUM_COLUMN, inputs=[(dirs.inputs / "allowed.csv").as_uri()]),
    )
    outside = start_job(start, algorithm_stage("print(1)", inputs=["file:///etc/hostname"]))
    row = wait_finished(db, allowed)
    assert row["outputs"][0]["filename"] == "sum.txt"
    refused = wait_finished(db, outside)
    assert "only under the engine's inputRoots" in log_of(refused, "configrationLog")


def test_results_past_their_expiry_are_deleted_and_getresult_says_410(
    start: FlaskClient,
    status: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(storageExpiry=1)
    code = "import os\nopen(os.environ['OUTPUTS'] + '/o.txt', 'w').write('x')"
    job_id = start_job(start, algorithm_stage(code))
    row = wait_finished(db, job_id)
    files = [published_path(entry) for entry in row["outputs"]]
    wait_for(lambda: job_expired(db, job_id), what="the sweep")

    answer = get_result(result, job_id, 0)
    assert (answer.status_code, answer.json) == (410, {"error": f"results of job {job_id} expired"})
    shown = signed_status(status, job_id)
    assert shown["results"] and all(entry["expired"] for entry in shown["results"])
    assert not any(path.exists() for path in files)


def job_expired(db: Database, job_id: str) -> bool:
    rows = db.query("SELECT resultsexpired IS NOT NULL FROM jobs WHERE workflowid = :j", j=job_id)
    return bool(rows[0][0])


def test_a_job_the_engine_fails_on_ends_instead_of_looping(
    start: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    # A row as a less careful writer (the original service) could store it: the container is
    # not an object. Whatever the engine trips on, the job ends, and is not retried forever.
    job_id = start_job(start, algorithm_stage("print(1)"))
    [[stored]] = db.query("SELECT workflow FROM jobs WHERE workflowid = :j", j=job_id)
    document = json.loads(stored)
    document["spec"]["metadata"]["stages"][0]["algorithm"]["container"] = ["not", "an object"]
    db.execute(
        "UPDATE jobs SET workflow = :w WHERE workflowid = :j", w=json.dumps(document), j=job_id
    )
    run_engine()
    row = wait_finished(db, job_id)
    assert row["status"] == 70
    assert "the engine failed on this job" in log_of(row, "publishLog")
    receipt = receipt_of(result, row, job_id)  # its receipt says so, signed all the same
    assert receipt["outcome"] == "engine_error" and receipt["outputs"] == []


def test_the_engine_holds_no_connection_per_job_it_ran(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    """Each job runs in a thread with a connection of its own, closed when the thread ends:
    before, every finished job left one open, and a busy engine ran out of connections."""

    def backends() -> int:
        [[count]] = db.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
        return int(count)

    run_engine(maxJobs=2)
    idle = backends()  # the tests' own, and the engine's loop and listener
    jobs = [start_job(start, algorithm_stage("print('x')")) for _ in range(8)]
    for job_id in jobs:
        assert wait_finished(db, job_id)["status"] == 70
    wait_for(lambda: backends() <= idle + 1, timeout=10, what="the job threads' connections")


def test_no_job_folder_outlives_its_job(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine], dirs: Dirs
) -> None:
    run_engine()
    finished = start_job(start, algorithm_stage("print(1)"))
    wait_finished(db, finished)
    # What an engine that died mid-job leaves: the folder of a job another engine finished
    # since, and one of a job nobody knows. Both hold a dataset's private inputs.
    leftovers = [dirs.work / finished, dirs.work / "0123456789abcdef0123456789abcdef"]
    for folder in leftovers:
        (folder / "inputs" / "0").mkdir(parents=True)
        (folder / "inputs" / "0" / "0").write_text("private")
    wait_for(lambda: not any(folder.exists() for folder in leftovers), what="the sweep")
