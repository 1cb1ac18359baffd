"""The engine's benchmark: pickup latency, a no-op job end to end, jobs per minute, idle CPU.

    .venv/bin/python -m bench.engine [--jobs 40] [--idle 30]

`python -m engine` runs as its own process on an embedded PostgreSQL of its own. Jobs are
stored the way the start function stores them; a trigger records clock_timestamp() at the
insert and at every status, so each time is PostgreSQL's own clock. Beside them, the floors
measured in the same run: a NOTIFY's round trip (the least a pickup can take), an empty
sandbox and Python in a sandbox (a job runs three sandboxes: configure, algorithm, publish).
The original engine's anchor is its polling period: 5 s. The section it writes into
bench/RESULTS.md sits between markers that `bench.run` keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench import sections
from bench.cpu import Processes
from common import jobs, store
from common.config import Settings
from common.db import Database
from engine.results import remove_tree
from engine.runner import Limits, Stage, StageSpec
from engine.sandbox import SandboxRunner
from local import postgres

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
NAMESPACE = "ocean-compute"
ORIGINAL_POLL_SECONDS = 5.0
NO_OP = {"rawcode": "#", "container": {"image": "busybox", "tag": "latest", "entrypoint": "true"}}

MARKS = """
CREATE TABLE IF NOT EXISTS bench_marks (workflowid varchar(255), status int,
    at timestamp DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION bench_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_marks (workflowid, status) VALUES (NEW.workflowid, NEW.status);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_mark ON jobs;
CREATE TRIGGER bench_mark AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH ROW EXECUTE FUNCTION bench_mark();
"""


class Bench:
    def __init__(self, base: Path, settings: Settings, env: dict[str, str]) -> None:
        self.base = base
        self.settings = settings
        self.env = env
        self.db = Database(settings)

    def insert(self) -> str:
        """One job, stored as the start function stores it."""
        job_id = uuid.uuid4().hex
        stage = jobs.engine_stage(
            {"index": 0, "input": [], "algorithm": dict(NO_OP), "compute": {}, "output": {}}
        )
        document = jobs.workflow_document(job_id, NAMESPACE, stage, None)
        new = store.NewJob(
            agreement_id=job_id,
            job_id=job_id,
            owner="0x" + "00" * 20,
            namespace=NAMESPACE,
            workflow=document,
            provider=None,
            chain_id=None,
        )
        with self.db.transaction() as tx:
            store.insert_job(tx, new, None)
        return job_id

    def times(self, job_id: str) -> dict[int, float]:
        """Seconds from the insert to the first time the job reached each status."""
        rows = self.db.query(
            """SELECT status, extract(epoch from min(at))::float FROM bench_marks
               WHERE workflowid = :j GROUP BY status""",
            j=job_id,
        )
        marks = {status: float(at) for status, at in rows}
        return {status: at - marks[1] for status, at in marks.items()}

    def finished(self, job_ids: list[str]) -> bool:
        rows = self.db.query(
            "SELECT count(*) FROM jobs WHERE workflowid = ANY(CAST(:j AS varchar[])) "
            "AND datefinished IS NOT NULL",
            j=job_ids,
        )
        return int(rows[0][0]) == len(job_ids)

    @contextmanager
    def engine(self, max_jobs: int) -> Iterator[subprocess.Popen[bytes]]:
        config = self.base / f"engine-{max_jobs}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    # runtime host: the engine's own cost, not a registry's (no pulls here).
                    "environments": [
                        {"id": NAMESPACE, "maxJobs": max_jobs, "diskGB": 0.1, "runtime": "host"}
                    ],
                    "engine": {"resultsRoot": str(self.base / "results")},
                }
            )
        )
        log = (self.base / "engine.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "--work-root", str(self.base / "work")],
            cwd=ROOT,
            env={**os.environ, **self.env, "ENGINE_CONFIG": str(config), "LOG_LEVEL": "WARNING"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait(lambda: bool(self.db.query("SELECT 1 FROM envs")), 30)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
            self.db.execute("TRUNCATE envs")

    def wait(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise SystemExit(f"bench.engine: timed out; see {self.base / 'engine.log'}")
            time.sleep(0.01)


def notify_round_trip(db: Database, count: int = 50) -> list[float]:
    """A NOTIFY committed on one connection, seen by a LISTENer on another: pickup's floor."""
    listener = db.listen("bench_ping")
    seen: list[float] = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            db.execute("SELECT pg_notify('bench_ping', 'x')")
            while not listener.wait(1.0):
                pass
            seen.append(time.perf_counter() - started)
    finally:
        listener.close()
    return seen


def sandbox_floor(base: Path, argv: tuple[str, ...], count: int = 20) -> list[float]:
    runner = SandboxRunner()
    data = base / "floor"
    data.mkdir(exist_ok=True)
    runner.provide(data)
    limits = Limits(seconds=60, memory_bytes=1 << 30, disk_bytes=1 << 30)
    taken = []
    for _ in range(count):
        spec = StageSpec("floor", Stage.ALGORITHM, argv, data, base / "floor.log", limits)
        started = time.perf_counter()
        handle = runner.start(spec)
        while (outcome := runner.poll(handle)) is None:
            time.sleep(0.001)
        assert outcome.succeeded, outcome
        taken.append(time.perf_counter() - started)
    return taken


STAGES = {
    "configure (20 to 30)": (20, 30),
    "algorithm (40 to 60)": (40, 60),
    "publish (60 to 70)": (60, 70),
}


def latency(bench: Bench, count: int) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Pickup (insert to 20), end to end (insert to 70) and each stage of no-op jobs, one at
    a time."""
    pickups, totals = [], []
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    with bench.engine(max_jobs=1):
        for _ in range(count):
            job_id = bench.insert()
            bench.wait(lambda job=job_id: bench.finished([job]), 60)
            marks = bench.times(job_id)
            pickups.append(marks[20])
            totals.append(marks[70])
            for name, (first, last) in STAGES.items():
                stages[name].append(marks[last] - marks[first])
            time.sleep(0.2)  # the engine idle again, as a job arriving alone finds it
    return pickups, totals, stages


def throughput(bench: Bench, max_jobs: int, count: int) -> float:
    """No-op jobs per minute, all stored at once, from the first insert to the last 70."""
    with bench.engine(max_jobs=max_jobs):
        job_ids = [bench.insert() for _ in range(count)]
        bench.wait(lambda: bench.finished(job_ids), 600)
        rows = bench.db.query(
            """SELECT extract(epoch from max(at) - min(at))::float FROM bench_marks
               WHERE workflowid = ANY(CAST(:j AS varchar[]))""",
            j=job_ids,
        )
    return count / float(rows[0][0]) * 60


def idle_cpu(bench: Bench, seconds: float) -> float:
    """The engine's CPU, as a percentage of one core, while it waits for work."""
    with bench.engine(max_jobs=1) as process:
        time.sleep(3)  # past start-up
        before, started = Processes().tree_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        after, ended = Processes().tree_seconds(process.pid), time.monotonic()
    return (after - before) / (ended - started) * 100


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    median = statistics.median(values)
    return f"{median * 1000:.0f} ms (p90 {p90 * 1000:.0f}, max {ordered[-1] * 1000:.0f})"


def report(found: dict[str, Any]) -> str:
    pickup, total = found["pickup"], found["total"]
    verdict = {
        "pickup": statistics.median(pickup) <= 0.1,
        "total": statistics.median(total) <= 1.0,
        "idle": found["idle"] <= 1.0,
    }

    floor = statistics.median(found["python"]) + statistics.median(found["empty"])

    def met(key: str) -> str:
        return "met" if verdict[key] else "**not met**"

    return "\n".join(
        [
            "## The engine",
            "",
            f"Regenerate with `.venv/bin/python -m bench.engine` ({found['took']:.0f} s). "
            "`python -m engine` as its own process with the bubblewrap runner, on an embedded "
            "PostgreSQL of its own; no-op jobs (entrypoint `true`) stored as the start function "
            "stores them; times from PostgreSQL's clock_timestamp() at the insert and at each "
            f"status. {found['machine']}.",
            "",
            "| measure | result | target | verdict |",
            "|---|---|---|---|",
            f"| pickup, insert to 20 (median of {len(pickup)}) | {ms(pickup)} | <= 100 ms | "
            f"{met('pickup')} |",
            f"| no-op job, insert to 70 | {ms(total)} | <= 1 s | {met('total')} |",
            f"| no-op jobs per minute, maxJobs 1 | {found['rate1']:.0f} | | |",
            f"| no-op jobs per minute, maxJobs 4 | {found['rate4']:.0f} | | |",
            f"| idle engine, % of one core over {found['idle_seconds']:.0f} s | "
            f"{found['idle']:.2f} | <= 1 | {met('idle')} |",
            "",
            "Where a no-op job's time goes, stage by stage (each includes its status write):",
            "",
            *[f"- {name}: {ms(values)}" for name, values in found["stages"].items()],
            "",
            "Floors measured in the same run:",
            "",
            f"- the original engine polls every {ORIGINAL_POLL_SECONDS:.0f} s: its pickup "
            f"is 0 to {ORIGINAL_POLL_SECONDS:.0f} s, {ORIGINAL_POLL_SECONDS / 2 * 1000:.0f} ms "
            "on average, before any work",
            f"- a NOTIFY's round trip to a LISTENer on this PostgreSQL: {ms(found['notify'])}",
            f"- an empty sandbox (`true` in bubblewrap, dropped to nobody): {ms(found['empty'])}",
            f"- Python in a sandbox (`python3 -I -c pass`): {ms(found['python'])}",
            "- a no-op job runs configure (Python) and the algorithm, each in a sandbox of its "
            "own (publishing runs none when there are no outputs), so one of each bounds it "
            f"from below: {floor * 1000:.0f} ms",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=40, help="jobs per throughput run")
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle measured")
    args = parser.parse_args()
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    base.chmod(0o711)
    server = postgres.start(base / "postgres", delete_on_exit=True)
    env = server.env()
    settings = Settings.from_env(env, serves_api=False)
    try:
        db = Database(settings)
        store.apply_schema(db)
        db.execute(MARKS)
        bench = Bench(base, settings, env)
        found: dict[str, Any] = {
            "notify": notify_round_trip(db),
            "empty": sandbox_floor(base, ("true",)),
            "python": sandbox_floor(base, ("python3", "-I", "-c", "pass")),
            "idle_seconds": args.idle,
        }
        found["idle"] = idle_cpu(bench, args.idle)
        found["pickup"], found["total"], found["stages"] = latency(bench, args.latency_jobs)
        found["rate1"] = throughput(bench, 1, args.jobs)
        found["rate4"] = throughput(bench, 4, args.jobs)
        found["took"] = time.monotonic() - started
        found["machine"] = (
            f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.platform()}"
        )
        section = report(found)
        sections.write(RESULTS, sections.ENGINE, section)
        print(section)
        print(json.dumps({k: v for k, v in found.items() if not isinstance(v, list | dict)}))
        db.close()
        bench.db.close()
    finally:
        server.stop()
        remove_tree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
