"""Stops in every stage and maxJobDuration, on real sandboxed processes with short real limits.

Bounds here are functional, not speed claims: each waiting stage would take minutes (a 600 s
sleep, a 30 s fetch timeout), so a job that ends within seconds was ended by the stop or the
deadline, not by itself."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests.engine.conftest import (
    Dirs,
    algorithm_stage,
    get_result,
    start_job,
)
from tests.jobrows import job_row, log_of, wait_finished, wait_for
from tests.provider import PROVIDER

WRITE_THEN_SLEEP = """
import os, time
open(os.path.join(os.environ["OUTPUTS"], "partial.txt"), "w").write("so far\\n")
print("wrote partial output", flush=True)
time.sleep(600)
"""
# Forks as many sleepers as the process limit allows, each in a session of its own, then
# sleeps: every one of them must die at the deadline.
FORK_HAPPY = """
import os, sys, time
children = 0
for _ in range(5000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.setsid()
        # A shell is cheap to start (python3 is not: 256 of them outlast a loaded machine's
        # deadline); "; :" keeps it from exec'ing sleep, so TOKEN stays in a command line.
        os.execvp("sh", ["sh", "-c", "sleep 600; :", "TOKEN"])
    children += 1
print("forked", children, flush=True)
time.sleep(600)
"""


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A URL whose server accepts connections and never answers: a fetch hangs on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow.csv"
    listener.close()


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox_tool(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stop_job(stop: FlaskClient, job_id: str) -> None:
    answer = stop.put("/api/v1/operator/compute", query_string=PROVIDER.signed(job_id=job_id))
    assert answer.status_code == 200, answer.json


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_deadline_kills_the_algorithm_and_the_job_publishes_what_it_wrote(
    start: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    run_engine(maxJobDuration=2)
    job_id = start_job(start, algorithm_stage(WRITE_THEN_SLEEP))
    row = wait_finished(db, job_id, timeout=30)
    assert (row["status"], row["stopreq"]) == (70, 2)
    assert status_history(job_id) == [20, 30, 40, 60, 70]
    text = log_of(row, "algorithmLog")
    assert "wrote partial output" in text
    assert "killed at its deadline" in text and "maxJobDuration is 2 s" in text
    assert row["outputs"][0]["filename"] == "partial.txt"
    assert get_result(result, job_id, 0).data == b"so far\n"


def test_a_fork_happy_algorithm_dies_whole_at_the_deadline(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    token = f"fork-happy-{os.urandom(4).hex()}"
    run_engine(maxJobDuration=3)
    job_id = start_job(start, algorithm_stage(FORK_HAPPY.replace("TOKEN", token)))
    wait_for(lambda: processes_with(token), what="the sleepers")
    row = wait_finished(db, job_id, timeout=30)
    assert row["stopreq"] == 2
    assert processes_with(token) == []
    forked = int(log_of(row, "algorithmLog").split("forked ")[1].split()[0])
    assert 0 < forked < 5000  # the process limit stopped the forking


def test_a_stop_while_configuring_ends_the_job(
    start: FlaskClient,
    stop: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    silent_server: str,
    status_history: Callable[[str], list[int]],
) -> None:
    run_engine()
    job_id = start_job(start, algorithm_stage("print(1)", inputs=[silent_server]))
    wait_for(lambda: job_row(db, job_id)["status"] == 20, what="configuring")
    stop_job(stop, job_id)
    row = wait_finished(db, job_id, timeout=10)  # the fetch alone would hang for 30 s
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert status_history(job_id) == [20, 60, 70]
    assert "stopped on request while configuring" in log_of(row, "configrationLog")


def test_a_stop_while_the_algorithm_runs_ends_it_and_publishes_what_it_wrote(
    start: FlaskClient,
    stop: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
    dirs: Dirs,
) -> None:
    run_engine()
    job_id = start_job(start, algorithm_stage(WRITE_THEN_SLEEP))
    wait_for(lambda: job_row(db, job_id)["status"] == 40, what="the algorithm")
    running_log = dirs.results / job_id / "logs" / "algorithm.log"
    wait_for(
        lambda: running_log.exists() and "wrote partial" in running_log.read_text(),
        what="the output",
    )
    stop_job(stop, job_id)
    row = wait_finished(db, job_id, timeout=10)
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert status_history(job_id) == [20, 30, 40, 60, 70]
    assert "stopped on request" in log_of(row, "algorithmLog")
    assert row["outputs"][0]["filename"] == "partial.txt"


def test_a_stop_while_publishing_ends_the_job_with_its_logs(
    start: FlaskClient,
    stop: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    # Outputs large enough that copying and hashing them takes a while (seconds) to publish,
    # so that the stop arrives while it runs.
    code = (
        "import os\nblock = os.urandom(1 << 20)\n"
        "for i in range(400):\n"
        "    open(os.path.join(os.environ['OUTPUTS'], f'part{i}'), 'wb').write(block)\n"
    )
    run_engine(diskGB=0.5)
    job_id = start_job(start, algorithm_stage(code))
    wait_for(lambda: job_row(db, job_id)["status"] == 60, what="publishing", timeout=60)
    stop_job(stop, job_id)
    # About a second as a rule; once, in a whole suite's run, over 10 s (docs/testing.md).
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert "publish stopped on request" in log_of(row, "publishLog")
    assert [e["type"] for e in row["outputs"]] == [
        "configrationLog",
        "algorithmLog",
        "publishLog",
        "receipt",
    ]
