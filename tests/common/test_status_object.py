"""The status object PostgreSQL builds (`job_status` in common/schema.sql) for whatever the jobs
table holds, written by us, by the original service or by hand: the DIDs of the first stage and
the results without their URLs, as the original's Python showed them, and never an error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common import store
from common.db import Database
from common.store import JobFilter


def status_of(db: Database, *, workflow: str | None = None, outputs: str | None = None,
              expired: bool = False) -> dict[str, Any]:  # fmt: skip
    db.execute(
        """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow,
               outputsurl, resultsexpired)
           VALUES ('a-1', 'job-1', '0xo', 70, 'Job finished', :workflow, :outputs,
               CASE WHEN :expired THEN NOW() END)""",
        workflow=workflow,
        outputs=outputs,
        expired=expired,
    )
    (status,) = json.loads(store.job_statuses(db, JobFilter(job_id="job-1")))
    assert isinstance(status, dict)
    return status


def stage(**fields: Any) -> str:
    return json.dumps({"spec": {"metadata": {"stages": [fields]}}})


@pytest.mark.parametrize(
    ("workflow", "algorithm", "inputs"),
    [
        (stage(algorithm={"id": "did:a"}, input=[{"id": "did:i"}]), "did:a", ["did:i"]),
        # inputs that are no objects, or have no id, are left out; an id of null is kept
        (
            stage(algorithm={"id": "a"}, input=[{"id": "i"}, "s", 4, {"x": 1}, {"id": None}]),
            "a",
            ["i", None],
        ),
        # `id or "raw"`: whatever Python takes for false
        *[(stage(algorithm={"id": empty}, input=[]), "raw", []) for empty in ("", 0, None, [])],
        (stage(algorithm={"x": 1}, input=[]), "raw", []),
        (stage(algorithm={"id": 7}, input=[]), 7, []),
        # an input Python iterates without finding objects in it
        (stage(algorithm={"id": "a"}, input="abc"), "a", []),
        (stage(algorithm={"id": "a"}, input={"id": "i"}), "a", []),
        # where Python stumbled, neither DID
        (stage(algorithm={"id": "a"}, input=3), "raw", []),
        (stage(algorithm={"id": "a"}), "raw", []),
        (stage(algorithm="a", input=[]), "raw", []),
        (json.dumps({"spec": {"metadata": {"stages": []}}}), "raw", []),
        (
            json.dumps({"spec": {"metadata": {"stages": {"0": {"algorithm": {"id": "a"}}}}}}),
            "raw",
            [],
        ),
        ("not JSON", "raw", []),
        (None, "raw", []),
        # a duplicated key: the last one, as Python's json module reads it
        (
            '{"spec": {"metadata": {"stages": [{"algorithm": {"id": "x"}, "algorithm": '
            '{"id": "y"}, "input": []}]}}}',
            "y",
            [],
        ),
    ],
)
def test_the_dids_of_the_first_stage(
    db: Database, workflow: str | None, algorithm: Any, inputs: list[Any]
) -> None:
    status = status_of(db, workflow=workflow)
    assert (status["algoDID"], status["inputDID"]) == (algorithm, inputs)


@pytest.mark.parametrize(
    ("outputs", "expired", "results"),
    [
        (
            '[{"filename": "a", "url": "https://x/a", "filesize": 3}, "x", 4]',
            False,
            [{"filename": "a", "filesize": 3}],
        ),
        (
            '[{"filename": "a", "url": "u", "expired": false}]',
            True,
            [{"filename": "a", "expired": True}],
        ),
        ('["x"]', False, []),
        ("[]", False, ""),
        ('{"filename": "a"}', False, ""),
        ("not JSON", False, ""),
        (None, False, ""),
    ],
)
def test_results_never_show_their_urls(
    db: Database, outputs: str | None, expired: bool, results: Any
) -> None:
    assert status_of(db, outputs=outputs, expired=expired)["results"] == results


def test_every_field_and_its_order(db: Database) -> None:
    db.execute(
        """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow,
               datecreated, datefinished, stopreq, removed)
           VALUES ('a-1', 'job-1', '0xo', 70, 'Job finished', :workflow,
               '2026-01-02 03:04:05.5', '2026-01-02 03:04:06', 1, 0)""",
        workflow=stage(algorithm={"id": "did:a"}, input=[{"id": "did:i"}]),
    )
    (status,) = json.loads(store.job_statuses(db, JobFilter(owner="0xo")))
    assert list(status.items()) == [
        ("agreementId", "a-1"),
        ("jobId", "job-1"),
        ("owner", "0xo"),
        ("status", 70),
        ("statusText", "Job finished"),
        ("dateCreated", "1767323045.500000"),
        ("dateFinished", "1767323046.000000"),
        ("results", ""),
        ("stopreq", 1),
        ("removed", 0),
        ("algoDID", "did:a"),
        ("inputDID", ["did:i"]),
    ]


def test_an_upgrade_works_out_the_dids_of_unfinished_jobs_stored_before_it(db: Database) -> None:
    """A job is stored with its DIDs worked out (`dids`); /runningjobs reads them from there."""
    workflow = stage(algorithm={"id": "did:a"}, input=[{"id": "did:i"}])
    for job, finished in (("old-running", None), ("old-done", "2026-01-01")):
        db.execute(
            """INSERT INTO jobs (agreementid, workflowid, owner, status, workflow, datefinished)
               VALUES (:job, :job, '0xo', 40, :workflow, CAST(:finished AS timestamp))""",
            job=job,
            workflow=workflow,
            finished=finished,
        )
    store.apply_schema(db)
    stored = dict(db.query("SELECT workflowid, dids::text FROM jobs ORDER BY workflowid"))
    assert stored == {
        "old-done": None,
        "old-running": '{"algoDID": "did:a", "inputDID": ["did:i"]}',
    }
    (listed,) = json.loads(store.running_statuses(db))
    assert (listed["jobId"], listed["algoDID"], listed["namespace"]) == (
        "old-running",
        "did:a",
        None,
    )
