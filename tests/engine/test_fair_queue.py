"""The fair queue through real engines: who is claimed next, maxJobsPerOwner between two
engines, the place and likely start a waiting job is shown, and the starvation bound.

Each job's claim time is the engine's own record (`claimedat`, written by claim_fairly), so the
order is read from the database, not inferred from timing."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests.engine.conftest import algorithm_stage, signed_status
from tests.jobrows import wait_finished, wait_for
from tests.provider import start_body

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
COMPUTE = "/api/v1/operator/compute"


def start_as(start: FlaskClient, owner: str, code: str = "print(1)") -> str:
    body = start_body(
        os.urandom(8).hex(), workflow={"stages": [algorithm_stage(code)]}, owner=owner
    )
    answer = start.post(COMPUTE, json=body)
    assert answer.status_code == 200, answer.json
    job_id: str = answer.json[0]["jobId"]
    return job_id


def shown(status: FlaskClient, db: Database, job_id: str) -> dict[str, Any]:
    """The job's status object, as its owner's Provider asks for it."""
    [[owner]] = db.query("SELECT owner FROM jobs WHERE workflowid = :j", j=job_id)
    return signed_status(status, job_id, owner)


def claim_order(db: Database, job_ids: list[str]) -> list[str]:
    rows = db.query(
        """SELECT workflowid FROM jobs WHERE workflowid = ANY(CAST(:ids AS varchar[]))
               AND claimedat IS NOT NULL ORDER BY claimedat""",
        ids=job_ids,
    )
    return [row[0] for row in rows]


def sleeping(seconds: float) -> str:
    return f"import time; time.sleep({seconds})"


def test_an_owner_with_one_job_runs_second_behind_an_owner_with_twenty(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    alices = [start_as(start, ALICE) for _ in range(20)]
    bobs = start_as(start, BOB)
    run_engine(maxJobs=1)
    wait_finished(db, bobs)
    order = claim_order(db, [*alices, bobs])
    assert order.index(bobs) == 1, order  # Alice's oldest first, then Bob's, not 21st
    assert order[0] == alices[0]
    # Each finished job added its seconds to its owner's usage, which orders the next claims.
    [[alice_used, bob_used]] = db.query(
        """SELECT (SELECT usage FROM queue_owners WHERE owner = :a),
                  (SELECT usage FROM queue_owners WHERE owner = :b)""",
        a=ALICE,
        b=BOB,
    )
    assert alice_used is not None and bob_used is not None


def test_max_jobs_per_owner_holds_between_two_engines(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    alices = [start_as(start, ALICE, sleeping(0.5)) for _ in range(4)]
    bobs = [start_as(start, BOB, sleeping(0.5)) for _ in range(2)]
    run_engine(maxJobs=3, maxJobsPerOwner=1)
    run_engine(maxJobs=3, maxJobsPerOwner=1)
    for job_id in [*alices, *bobs]:
        wait_finished(db, job_id, timeout=120)
    for owner in (ALICE, BOB):
        spans = db.query(
            """SELECT claimedat, datefinished FROM jobs WHERE owner = :o
               ORDER BY claimedat""",
            o=owner,
        )
        for (_, finished), (claimed, _) in itertools.pairwise(spans):
            assert claimed >= finished, (owner, spans)  # never two of one owner at once
    # With free slots, the other owner ran beside: Bob's first job did not wait for Alice's.
    [[bob_first]] = db.query("SELECT min(claimedat) FROM jobs WHERE owner = :o", o=BOB)
    [[alice_second]] = db.query(
        "SELECT claimedat FROM jobs WHERE owner = :o ORDER BY claimedat OFFSET 1 LIMIT 1",
        o=ALICE,
    )
    assert bob_first < alice_second


def test_a_waiting_job_is_shown_its_exact_place_which_only_decreases(
    start: FlaskClient,
    status: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    run_engine(maxJobs=1)
    first = start_as(start, ALICE, sleeping(2))
    wait_for(lambda: claim_order(db, [first]), what="Alice's first job to run")
    alice_2, alice_3 = start_as(start, ALICE), start_as(start, ALICE)
    bob, carol = start_as(start, BOB), start_as(start, CAROL)
    # Alice has one running: her next jobs come after the owners with none.
    places = {job: shown(status, db, job).get("queuePosition") for job in
              (bob, carol, alice_2, alice_3)}  # fmt: skip
    assert places == {bob: 1, carol: 2, alice_2: 3, alice_3: 4}, places
    waiting = shown(status, db, alice_3)
    assert list(waiting)[-2:] == ["queuePosition", "estimatedStart"]  # after every original key
    seen = []
    while (now := shown(status, db, alice_3))["status"] == 1:
        seen.append(now["queuePosition"])
        time.sleep(0.05)
    assert seen == sorted(seen, reverse=True) and seen[0] == 4, seen
    assert claim_order(db, [first, bob, carol, alice_2, alice_3])[1:] == [
        bob,
        carol,
        alice_2,
        alice_3,
    ]
    [[announced]] = db.query("SELECT status FROM envs")
    assert '"queuedJobs"' in announced


def test_the_estimated_start_is_within_its_bound_for_jobs_of_known_duration(
    start: FlaskClient,
    status: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    # Every job runs to its maxJobDuration (2 s): the estimate counts 2 s a job, so the real
    # start may only be later, by each job's configure and publish and claim (under a second
    # each here), never earlier.
    run_engine(maxJobs=1, maxJobDuration=2)
    running = start_as(start, ALICE, sleeping(600))
    wait_for(lambda: claim_order(db, [running]), what="the first job to run")
    waiting = [start_as(start, BOB, sleeping(600)), start_as(start, CAROL, sleeping(600))]
    estimates = {job: float(shown(status, db, job)["estimatedStart"]) for job in waiting}
    for position, job in enumerate(waiting, start=1):
        wait_finished(db, job, timeout=60)
        [[claimed]] = db.query(
            "SELECT extract(epoch FROM claimedat) FROM jobs WHERE workflowid = :j", j=job
        )
        late = float(claimed) - estimates[job]
        assert -0.5 <= late <= 1.5 * position, (position, late)


def test_an_old_job_of_a_heavy_owner_is_taken_within_the_starvation_bound(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    heavy = start_as(start, ALICE, sleeping(0.2))
    # Alice has used the environment for years (2^30 job seconds, as of now): far above anyone.
    db.execute(
        "UPDATE queue_owners SET usage = 30 + extract(epoch FROM NOW()) / 3600 WHERE owner = :o",
        o=ALICE,
    )
    light = [start_as(start, f"0x{index:040x}", sleeping(1)) for index in range(1, 7)]
    run_engine({"starvationSeconds": 3}, maxJobs=1)
    wait_finished(db, heavy, timeout=60)
    order = claim_order(db, [heavy, *light])
    # Without the bound Alice's job would be last (7th); once it waited 3 s it went first.
    assert 2 <= order.index(heavy) <= 4, order
    [[waited]] = db.query(
        "SELECT extract(epoch FROM claimedat - datecreated) FROM jobs WHERE workflowid = :j",
        j=heavy,
    )
    assert 3 <= float(waited) <= 3 + 1 + 2, waited  # the bound, a job's length, slack
