"""Claims and leases between engines: each job runs exactly once, and a job whose engine died
is finished by another (or the same one restarted)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests.engine.conftest import (
    Dirs,
    algorithm_stage,
    engine_process,
    start_job,
)
from tests.engine.test_stops_and_timeouts import WRITE_THEN_SLEEP, processes_with
from tests.jobrows import job_row, log_of, published_path, wait_finished, wait_for


def test_two_engines_run_fifty_jobs_each_exactly_once(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    first, second = run_engine(maxJobs=4), run_engine(maxJobs=4)
    jobs = [start_job(start, algorithm_stage("print('ran')")) for _ in range(50)]
    rows = [wait_finished(db, job_id, timeout=180) for job_id in jobs]

    for job_id, row in zip(jobs, rows, strict=True):
        assert status_history(job_id) == [20, 30, 40, 60, 70], job_id
        assert log_of(row, "algorithmLog").count("algorithm starts") == 1
        assert log_of(row, "configrationLog").count("configure starts") == 1
    assert {row["engine"] for row in rows} == {first.id, second.id}


@pytest.mark.parametrize("tool", ["bwrap", "unshare"])
def test_an_engine_killed_mid_algorithm_is_replaced_and_the_job_ends_without_a_second_run(
    start: FlaskClient,
    db: Database,
    dirs: Dirs,
    pg_env: dict[str, str],
    status_history: Callable[[str], list[int]],
    tool: str,
) -> None:
    token = f"killed-engine-{os.urandom(4).hex()}"
    # The sleeper carries the token on its command line, so the test can look for it.
    sleeper = f'os.execvp("python3", ["python3", "-c", "import time; time.sleep(600)", "{token}"])'
    code = WRITE_THEN_SLEEP.replace("time.sleep(600)", sleeper)
    job_id = start_job_when_announced(start, db, dirs, pg_env, code, token, tool)

    with engine_process(dirs, pg_env, engine={"sandbox": tool}) as restarted:
        row = wait_finished(db, job_id, timeout=60)
        assert restarted.poll() is None
    assert row["status"] == 70 and row["engine"] != "killed"
    assert status_history(job_id) == [20, 30, 40, 60, 70]
    text = log_of(row, "algorithmLog")
    assert text.count("algorithm starts") == 1
    assert "the engine running this algorithm was lost" in text
    assert [e["type"] for e in row["outputs"]] == [
        "configrationLog",
        "algorithmLog",
        "publishLog",
        "receipt",
    ]
    # Its receipt says it was taken over, and how the algorithm ended: with its engine.
    receipt = json.loads(published_path(row["outputs"][-1]).read_text())["receipt"]
    assert (receipt["takenOver"], receipt["outcome"]) == (True, "engine_lost")
    # The control group the dead engine made for the algorithm went with the takeover.
    assert list(Path("/sys/fs/cgroup").glob(f"**/operator-engine/{job_id}-*")) == []


def start_job_when_announced(
    start: FlaskClient,
    db: Database,
    dirs: Dirs,
    pg_env: dict[str, str],
    code: str,
    token: str,
    tool: str,
) -> str:
    """Start a job on an engine process, and kill -9 that engine while the algorithm runs."""
    with engine_process(dirs, pg_env, engine={"sandbox": tool}) as first:
        wait_for(lambda: db.query("SELECT 1 FROM envs"), what="the engine's announcement")
        job_id = start_job(start, algorithm_stage(code))
        wait_for(lambda: job_row(db, job_id)["status"] == 40, what="the algorithm")
        wait_for(lambda: processes_with(token), what="the algorithm's process")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # The sandbox dies with the engine that started it: nothing of the algorithm runs on.
    wait_for(lambda: not processes_with(token), timeout=10, what="the sandbox to die")
    assert job_row(db, job_id)["finished"] is False
    return job_id


@pytest.mark.parametrize("left_at", [20, 30])
def test_a_job_left_while_configuring_is_configured_again_and_finishes(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
    env_announced: dict[str, Any],
    left_at: int,
) -> None:
    job_id = start_job(start, algorithm_stage("print('ran once')"))
    # What a dead engine leaves: the job claimed, its lease run out, its folder (perhaps on
    # another machine) not here.
    db.execute(
        """UPDATE jobs SET status = :s, engine = 'dead-engine',
               leaseuntil = NOW() - interval '1 minute' WHERE workflowid = :j""",
        s=left_at,
        j=job_id,
    )
    run_engine()
    row = wait_finished(db, job_id)
    assert status_history(job_id)[-5:] == [20, 30, 40, 60, 70]
    assert "ran once" in log_of(row, "algorithmLog")


def test_a_job_of_the_original_engine_is_never_taken_over(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    job_id = start_job(start, algorithm_stage("print(1)"))
    # The original engine claims nothing: a job it runs has no lease, however long it takes.
    db.execute("UPDATE jobs SET status = 40 WHERE workflowid = :j", j=job_id)
    engine = run_engine()
    wait_for(lambda: engine.queue.heartbeat("ocean-compute", {}, 0).claimable == 0)
    row = job_row(db, job_id)
    assert (row["status"], row["engine"], row["finished"]) == (40, None, False)


def test_no_job_waits_for_the_fallback_poll(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    """With a 30 s poll, only wake-ups can make these jobs start within 10 s: one stored right
    after the engine's first announcement, and one waiting for the only slot to free."""
    run_engine(engine={"pollSeconds": 30, "heartbeatSeconds": 30, "leaseSeconds": 60}, maxJobs=1)
    first = start_job(start, algorithm_stage("import time\ntime.sleep(1)"))
    second = start_job(start, algorithm_stage("print('second')"))
    wait_for(lambda: job_row(db, first)["status"] >= 20, timeout=10, what="the first claim")
    wait_finished(db, first, timeout=20)
    wait_for(lambda: job_row(db, second)["status"] >= 20, timeout=10, what="the freed slot")
    wait_finished(db, second, timeout=20)
