"""The stage machine (engine/machine.py) on the real database, with a scripted runner: every
status a takeover can find, a stop in every stage, a timeout, a failed configure, a lost
lease. Each job runs in this thread (or one of its own where a stage must be interrupted):
milliseconds a test, no sandbox."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings
from common.db import Database
from common.jobs import workflow_document
from common.statuses import Status
from engine import receipts
from engine.config import EngineConfig
from engine.machine import Abandoned, Context, JobRun
from engine.queue import LeaseLost, Queue
from engine.results import ResultsStore
from engine.runner import Ending, Stage
from tests.conftest import ENVIRONMENT
from tests.jobrows import job_row, log_of
from tests.machine.scripted import (
    COMPUTED,
    OUTPUT,
    RUNS_UNTIL_STOPPED,
    Script,
    ScriptedRunner,
    refuse_image,
    stop_during_pull,
)
from tests.provider import stage

ME, DEAD = "engine-under-test", "engine-that-died"
EVERY_STAGE = [Stage.CONFIGURE, Stage.ALGORITHM, Stage.PUBLISH]


@dataclass
class Machine:
    """One engine's stage machine over the test database, its jobs' folders in tmp_path."""

    db: Database
    config: EngineConfig
    runner: ScriptedRunner

    def context(self) -> Context:
        queue = Queue(self.db, ME, self.config.lease_seconds)
        return Context(self.config, queue, self.runner, ResultsStore(self.config.results_root))

    def job(self, status: int = 1, *, stopreq: int = 0, **stage_changes: Any) -> JobRun:
        """A job stored at `status`: waiting and claimed by us (1), or held by an engine whose
        lease ran out and taken over by us (any other status)."""
        job_id = f"job-{len(self.db.query('SELECT 1 FROM jobs')) + 1}"
        document = workflow_document(job_id, ENVIRONMENT, stage(**stage_changes), None)
        self.db.execute(
            """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow,
                   namespace, stopreq, engine, leaseuntil)
               VALUES (:job, :job, '0xowner', :status, '', :workflow, :ns, :stopreq,
                   CASE WHEN :status = 1 THEN NULL ELSE :dead END,
                   CASE WHEN :status = 1 THEN NULL ELSE NOW() - interval '1 second' END)""",
            job=job_id,
            status=status,
            workflow=json.dumps(document),
            ns=ENVIRONMENT,
            stopreq=stopreq,
            dead=DEAD,
        )
        context = self.context()
        env = self.config.environments[0]
        if status == 1:
            (claimed,) = context.queue.claim(env, 1)
        else:
            (claimed,) = context.queue.take_over(ENVIRONMENT, 1)
        return JobRun(claimed, env, context)

    def receipt(self, job_id: str) -> dict[str, Any]:
        path = self.config.results_root / job_id / receipts.FILE_NAME
        document: dict[str, Any] = json.loads(path.read_text())["receipt"]
        return document


@pytest.fixture
def machine(db: Database, settings: Settings, tmp_path: Path) -> Machine:
    raw = {
        "environments": [{"id": ENVIRONMENT, "runtime": "host", "diskGB": 0.25}],
        "engine": {"workRoot": str(tmp_path / "work"), "resultsRoot": str(tmp_path / "results")},
    }
    config = EngineConfig.parse(raw, settings, work_root=tmp_path / "work")
    return Machine(db, config, ScriptedRunner())


@pytest.fixture
def history(status_history: Callable[[str], list[int]]) -> Callable[[JobRun], list[int]]:
    return lambda run: status_history(run.job_id)


def outputs_of(row: dict[str, Any]) -> list[str]:
    return [entry["filename"] for entry in row["outputs"] if entry["type"] == "output"]


@contextmanager
def interrupted(machine: Machine, run: JobRun) -> Iterator[list[BaseException]]:
    """The job run in a thread of its own until a stage that runs until stopped has started,
    for the test to interrupt; joined after. What the run raised, if anything."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            run.run()
        except BaseException as exc:
            raised.append(exc)
        finally:
            machine.db.release()

    thread = threading.Thread(target=target)
    thread.start()
    try:
        assert machine.runner.started.wait(10), "no stage started"
        yield raised
    finally:
        thread.join(10)
        assert not thread.is_alive()


# A job from claim to finish.


def test_a_job_is_configured_run_and_published(machine: Machine, history: Any) -> None:
    run = machine.job()
    run.run()
    row = job_row(machine.db, run.job_id)
    assert (row["status"], row["statusText"], row["finished"]) == (70, "Job finished", True)
    assert history(run) == [20, 30, 40, 60, 70]
    assert machine.runner.ran() == EVERY_STAGE
    assert outputs_of(row) == [OUTPUT]
    assert [e["type"] for e in row["outputs"]][-1] == "receipt"
    receipt = machine.receipt(run.job_id)
    assert (receipt["outcome"], receipt["takenOver"]) == ("completed", False)
    assert receipt["inputs"][0]["files"][0]["size"] == 4  # what configure left, hashed
    assert ("remove_folder", run.job_id) in machine.runner.calls


# Takeovers: an engine died holding the job at each status it can store.

TAKEOVERS = {
    # status: (stages run again, outcome, outputs published)
    20: (EVERY_STAGE, "completed", [OUTPUT]),
    30: (EVERY_STAGE, "completed", [OUTPUT]),  # configured elsewhere, maybe: again
    31: ([], "resumed", []),
    32: ([], "resumed", []),
    40: ([], "engine_lost", []),  # not run twice; its partial outputs are dropped
    50: ([], "resumed", []),
    60: ([], "resumed", []),  # nothing was left in this engine's folders to publish
}


@pytest.mark.parametrize("status", sorted(TAKEOVERS))
def test_a_job_taken_over_at_each_status_ends_at_70(
    machine: Machine, history: Any, status: int
) -> None:
    stages, outcome, published = TAKEOVERS[status]
    run = machine.job(status)
    run.run()
    row = job_row(machine.db, run.job_id)
    assert (row["status"], row["finished"], row["engine"]) == (70, True, ME)
    assert machine.runner.ran() == stages
    assert outputs_of(row) == published
    receipt = machine.receipt(run.job_id)
    assert (receipt["outcome"], receipt["takenOver"]) == (outcome, True)
    assert history(run)[-2:] == ([60, 70] if status != 60 else [70])
    if status == 40:
        assert ("resume", Stage.ALGORITHM) in machine.runner.calls
        assert ("cleanup", run.job_id) in machine.runner.calls  # what the dead engine left
        assert "not run twice" in log_of(row, "algorithmLog")


def test_a_job_taken_over_at_60_publishes_what_its_algorithm_left(machine: Machine) -> None:
    """The dead engine's folder is where this engine looks (the same machine, or a volume)."""
    run = machine.job(60)
    outputs = run.data / "outputs"
    outputs.mkdir(parents=True)
    (outputs / OUTPUT).write_text("42\n")
    run.run()
    assert machine.runner.ran() == [Stage.PUBLISH]
    assert outputs_of(job_row(machine.db, run.job_id)) == [OUTPUT]


def test_an_algorithm_that_outlives_its_engine_is_waited_for(
    machine: Machine, history: Any
) -> None:
    """Taken over at 40 where stages outlive the engine (Kubernetes Jobs): the new engine
    waits for the running algorithm and publishes as usual."""
    machine.runner.outlives_engine = True
    run = machine.job(40)
    run.run()
    assert history(run) == [60, 70]
    assert machine.runner.ran() == []  # resumed, never started again
    assert machine.receipt(run.job_id)["outcome"] == "completed"
    assert "this engine takes it over" in log_of(job_row(machine.db, run.job_id), "algorithmLog")


# Stops: a stop ends the stage running when it arrives; publishing follows.


def test_a_stop_before_configure_publishes_nothing(machine: Machine, history: Any) -> None:
    run = machine.job(stopreq=1)
    run.run()
    assert history(run) == [20, 60, 70]
    assert machine.runner.ran() == []
    assert machine.receipt(run.job_id)["outcome"] == "stopped"


@pytest.mark.parametrize("stage", EVERY_STAGE)
def test_a_stop_ends_the_stage_that_runs(machine: Machine, history: Any, stage: Stage) -> None:
    # An algorithm has written its output when the stop comes.
    written = COMPUTED.files if stage is Stage.ALGORITHM else {}
    machine.runner.scripts[stage] = Script(ending=None, files=written)
    run = machine.job()
    with interrupted(machine, run) as raised:
        run.stop_requested.set()
    assert raised == []
    row = job_row(machine.db, run.job_id)
    assert (row["status"], row["stopreq"]) == (70, 0)
    assert ("stop", stage) in machine.runner.calls
    if stage is Stage.CONFIGURE:
        assert history(run) == [20, 60, 70]
        assert machine.runner.ran() == [Stage.CONFIGURE]
        assert outputs_of(row) == []
    elif stage is Stage.ALGORITHM:
        # What it wrote before the stop is published: the stop is not applied twice.
        assert history(run) == [20, 30, 40, 60, 70]
        assert machine.runner.ran() == EVERY_STAGE
        assert outputs_of(row) == [OUTPUT]
        assert machine.receipt(run.job_id)["outcome"] == "stopped"
    else:
        assert machine.runner.ran() == EVERY_STAGE
        assert outputs_of(row) == []  # a publish cut short publishes nothing half done
        assert "outputs not published" in log_of(row, "publishLog")


def test_a_stop_during_the_image_pull_publishes_nothing(machine: Machine) -> None:
    machine.runner.image = stop_during_pull
    run = machine.job()
    run.run()
    assert machine.runner.ran() == []
    assert machine.receipt(run.job_id)["outcome"] == "stopped"


# The algorithm's endings, as its runner reports them.


def test_a_timeout_sets_stopreq_2_and_publishes_what_was_written(
    machine: Machine, history: Any
) -> None:
    machine.runner.scripts[Stage.ALGORITHM] = Script(
        ending=Ending.TIMEOUT, exit_code=None, files={f"outputs/{OUTPUT}": b"partial"}
    )
    run = machine.job()
    run.run()
    row = job_row(machine.db, run.job_id)
    assert (row["status"], row["stopreq"]) == (70, 2)
    assert history(run) == [20, 30, 40, 60, 70]
    assert outputs_of(row) == [OUTPUT]
    assert machine.receipt(run.job_id)["outcome"] == "timeout"
    assert "stopreq=2" in log_of(row, "algorithmLog")


@pytest.mark.parametrize(
    ("ending", "exit_code", "outcome"),
    [
        (Ending.EXITED, 3, "algorithm_failed"),
        (Ending.MEMORY, None, "memory"),
        (Ending.QUOTA, None, "quota"),
        (Ending.FAILED, None, "algorithm_failed"),
    ],
)
def test_an_algorithm_that_fails_still_publishes_its_logs(
    machine: Machine, ending: Ending, exit_code: int | None, outcome: str
) -> None:
    machine.runner.scripts[Stage.ALGORITHM] = Script(ending=ending, exit_code=exit_code)
    run = machine.job()
    run.run()
    row = job_row(machine.db, run.job_id)
    assert row["status"] == 70
    assert machine.receipt(run.job_id)["outcome"] == outcome
    assert "the algorithm " in log_of(row, "algorithmLog")


# Configure's failures: 31 or 32, then publishing without outputs.


@pytest.mark.parametrize(
    ("exit_code", "status", "outcome"),
    [(31, 31, "data_failed"), (32, 32, "algorithm_failed"), (1, 31, "data_failed")],
)
def test_a_failed_configure_ends_at_its_status_then_70(
    machine: Machine, history: Any, exit_code: int, status: int, outcome: str
) -> None:
    machine.runner.scripts[Stage.CONFIGURE] = Script(exit_code=exit_code)
    run = machine.job()
    run.run()
    assert history(run) == [20, status, 60, 70]
    assert machine.runner.ran() == [Stage.CONFIGURE]
    assert machine.receipt(run.job_id)["outcome"] == outcome


def test_an_image_refused_is_an_algorithm_provisioning_failure(
    machine: Machine, history: Any
) -> None:
    machine.runner.image = refuse_image
    run = machine.job()
    run.run()
    assert history(run) == [20, Status.ALGORITHM_FAILED, 60, 70]
    assert "manifest unknown" in log_of(job_row(machine.db, run.job_id), "configrationLog")


def test_an_algorithm_without_entrypoint_is_refused_after_configure(
    machine: Machine, history: Any
) -> None:
    algorithm = {"id": "did:op:algo", "url": "https://example.org/a.py", "rawcode": ""}
    run = machine.job(algorithm={**algorithm, "container": {"image": "python", "tag": "3"}})
    run.run()
    assert history(run) == [20, 32, 60, 70]
    assert "no container entrypoint" in log_of(job_row(machine.db, run.job_id), "configrationLog")


# Letting go: the engine shuts down, or another engine holds the job now.


def test_an_abandoned_job_releases_its_stage_and_writes_nothing_more(machine: Machine) -> None:
    machine.runner.scripts[Stage.ALGORITHM] = RUNS_UNTIL_STOPPED
    run = machine.job()
    with interrupted(machine, run) as raised:
        run.abandon.set()
    assert [type(exc) for exc in raised] == [Abandoned]
    assert ("release", Stage.ALGORITHM) in machine.runner.calls
    row = job_row(machine.db, run.job_id)
    assert (row["status"], row["finished"], row["engine"]) == (40, False, ME)


def test_a_job_whose_lease_was_lost_is_let_go_at_its_next_step(machine: Machine) -> None:
    """Another engine took the job over (this one stalled past its lease): the stop this
    engine then sees ends its stage, and the step after it finds the job no longer ours."""
    machine.runner.scripts[Stage.ALGORITHM] = RUNS_UNTIL_STOPPED
    run = machine.job()
    with interrupted(machine, run) as raised:
        machine.db.execute("UPDATE jobs SET engine = :other", other=DEAD)
        run.stop_requested.set()
    assert [type(exc) for exc in raised] == [LeaseLost]
    row = job_row(machine.db, run.job_id)
    assert (row["status"], row["finished"], row["engine"]) == (40, False, DEAD)
