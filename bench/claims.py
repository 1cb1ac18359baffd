"""What a claim costs as the queue grows: the fair claim (claim_fairly) with 10 waiting jobs of
10 owners and with 10,000 of 1,000, beside the claim it replaced (oldest first) with 10.

    .venv/bin/python -m bench.claims [--rounds 300]

On an embedded PostgreSQL of its own. Each round claims one job in a transaction that is rolled
back, so every round sees the same queue; the time is the client's, round trip included, and
the floor measured in the same run is `SELECT 1`'s round trip. EXPLAIN ANALYZE of the
statements inside the fair claim, on the long queue, shows which indexes carry it. The section
it writes into bench/RESULTS.md sits between markers that `bench.run` keeps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench import sections
from common import store
from common.config import Settings
from common.db import Database
from engine.results import remove_tree
from local import postgres

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NAMESPACE = "ocean-compute"
FAIR = """SELECT workflowid FROM claim_fairly(:ns, 'bench', 15, 'Configuring volumes', 1, NULL,
                                            21600)"""
# The claim before fair queues (engine/queue.py at 64a4223), for the baseline.
OLDEST_FIRST = """WITH next AS (
        SELECT ctid FROM jobs WHERE namespace = :ns AND status = 1 AND datefinished IS NULL
        ORDER BY datecreated LIMIT 1 FOR UPDATE SKIP LOCKED)
    UPDATE jobs SET status = 20, engine = 'bench', leaseuntil = NOW() + interval '15 seconds'
    FROM next WHERE jobs.ctid = next.ctid RETURNING workflowid"""


def fill(db: Database, jobs: int, owners: int) -> None:
    db.execute("TRUNCATE jobs, queue_owners")
    db.execute(
        """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, namespace,
                             datecreated)
           SELECT 'a' || n, 'job-' || n, 'owner-' || (n % :owners), 1, 'Warming up', :ns,
                  NOW() - make_interval(secs => :jobs - n)
           FROM generate_series(1, :jobs) AS n""",
        jobs=jobs,
        owners=owners,
        ns=NAMESPACE,
    )
    # Some history: a tenth of the owners used the environment before, some run a job now.
    db.execute(
        """UPDATE queue_owners SET usage = extract(epoch FROM NOW()) / 3600 + random() * 10
           WHERE random() < 0.1"""
    )
    db.execute("ANALYZE jobs")
    db.execute("ANALYZE queue_owners")


class Rollback(Exception):
    """Raised to end a round's transaction without committing its claim."""


def timed(db: Database, sql: str, rounds: int) -> list[float]:
    """Seconds each claim took, client side; every round sees the same queue."""
    took = []
    for _ in range(rounds):
        try:
            with db.transaction() as tx:
                began = time.perf_counter()
                claimed = tx.run(sql, ns=NAMESPACE)
                took.append(time.perf_counter() - began)
                assert len(claimed) == 1, claimed
                raise Rollback
        except Rollback:
            pass
    return took


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-claims-"))
    server = postgres.start(base / "postgres", delete_on_exit=True)
    settings = Settings.from_env(server.env(), serves_api=False)
    try:
        db = Database(settings)
        store.apply_schema(db)
        section = report(measure(db, args.rounds))
        sections.write(RESULTS, sections.CLAIMS, section)
        print(section)
        db.close()
    finally:
        server.stop()
        remove_tree(base)
    return 0


def measure(db: Database, rounds: int) -> dict[str, list[float] | str]:
    found: dict[str, list[float] | str] = {"floor": timed_query(db, "SELECT 1", rounds)}
    fill(db, 10, 10)
    found["oldest first, 10 waiting"] = timed(db, OLDEST_FIRST, rounds)
    found["fair, 10 waiting of 10 owners"] = timed(db, FAIR, rounds)
    fill(db, 10_000, 1_000)
    found["fair, 10,000 waiting of 1,000 owners"] = timed(db, FAIR, rounds)
    # Not a claim: what placing one waiting job costs its status call (queue_places sorts the
    # environment's whole queue).
    placing = "SELECT job_status(jobs) FROM jobs WHERE workflowid = 'job-5000'"
    found["a waiting job's status object, 10,000 waiting"] = timed_query(db, placing, rounds // 10)
    found["plan"] = inner_plan(db)
    return found


def timed_query(db: Database, sql: str, rounds: int) -> list[float]:
    """Seconds each run of a read took, client side."""
    took = []
    for _ in range(rounds):
        began = time.perf_counter()
        db.query(sql)
        took.append(time.perf_counter() - began)
    return took


def inner_plan(db: Database) -> str:
    """The plans of the statements inside claim_fairly on the long queue (auto_explain)."""
    lines = []
    for sql in (
        """EXPLAIN (ANALYZE, COSTS OFF) SELECT q.owner FROM queue_owners q
           WHERE q.namespace = :ns AND q.waiting > 0
           ORDER BY q.running, q.usage NULLS FIRST, q.head LIMIT 8""",
        """EXPLAIN (ANALYZE, COSTS OFF) SELECT j.workflowid FROM jobs j
           WHERE j.namespace = :ns AND j.owner = 'owner-7' AND j.status = 1
               AND j.datefinished IS NULL ORDER BY j.datecreated LIMIT 1""",
        """EXPLAIN (ANALYZE, COSTS OFF) SELECT j.workflowid FROM jobs j
           WHERE j.namespace = :ns AND j.status = 1 AND j.datefinished IS NULL
               AND j.datecreated < NOW() - make_interval(secs => 21600)
           ORDER BY j.datecreated LIMIT 1""",
    ):
        lines += [str(row[0]) for row in db.query(sql, ns=NAMESPACE)] + [""]
    return "\n".join(lines).strip()


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{statistics.median(values) * 1000:.2f} ms (p95 {p95 * 1000:.2f})"


def report(found: dict[str, list[float] | str]) -> str:
    timings = {k: v for k, v in found.items() if isinstance(v, list)}
    status_ms = statistics.median(timings.pop("a waiting job's status object, 10,000 waiting"))
    baseline = statistics.median(timings["oldest first, 10 waiting"])
    long_queue = statistics.median(timings["fair, 10,000 waiting of 1,000 owners"])
    rows = "\n".join(f"| {name} | {ms(values)} |" for name, values in timings.items())
    return f"""## Claim cost (bench.claims)

One job claimed per round, in a transaction rolled back so every round sees the same queue;
client-side time, the round trip included (`SELECT 1` is the floor), median of
{len(timings["floor"])} rounds. Machine: {os.cpu_count()} cores, {platform.platform()}.

| claim | median (p95) |
|---|---|
{rows}

The fair claim on 10,000 waiting jobs of 1,000 owners costs {long_queue / baseline:.2f}x the
claim it replaced on 10 waiting jobs (the bound is 2x). It reads `queue_owners` by its index
(`queue_owners_next`: running, usage, head) and then one job by `jobs_waiting_by_owner`; the
starvation check reads the oldest waiting job by `jobs_waiting`. Placing a waiting job for its
status object sorts its environment's whole queue: {status_ms * 1000:.1f} ms on the long one
(status calls only; claims never do).


```
{found["plan"]}
```
"""


if __name__ == "__main__":
    raise SystemExit(main())
