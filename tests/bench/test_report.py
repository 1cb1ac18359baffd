"""The benchmark's arithmetic: ratios are taken within a round, CPU is counted over a process
tree, the children it has reaped included. No speed is asserted here (bench/RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import cpu, plots, report


def row(n: int, target: str, scenario: str, rps: float, **extra: object) -> dict[str, object]:
    return {
        "round": n,
        "target": target,
        "scenario": scenario,
        "concurrency": 32,
        "rps": rps,
        **extra,
    }


def test_a_ratio_pairs_runs_of_the_same_quiet_round_before_taking_the_median() -> None:
    rows = report.Rows(
        [
            row(1, report.TRIVIAL, "trivial", 1000),
            row(1, report.SERVICE, "status", 600),
            row(2, report.TRIVIAL, "trivial", 500),  # the machine slowed down for both
            row(2, report.SERVICE, "status", 300),
            row(3, report.TRIVIAL, "trivial", 800),  # a round the service missed counts not
            row(4, report.TRIVIAL, "trivial", 1000, steal_percent=30.0),  # a neighbour's load
            row(4, report.SERVICE, "status", 900),
        ]
    )

    ratio = rows.ratio((report.SERVICE, "status"), (report.TRIVIAL, "trivial"), 32)

    assert ratio.values == (0.6, 0.6)
    assert ratio.show(2) == "0.60 (0.60-0.60)"


def test_the_cpu_of_a_tree_counts_children_that_already_exited() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    before = cpu.Processes().tree_seconds(os.getpid())

    subprocess.run([sys.executable, "-c", burn], check=True)

    assert cpu.Processes().tree_seconds(os.getpid()) - before >= 0.25  # /proc counts in 10 ms ticks


def test_the_report_and_its_plots_come_from_the_rows_of_a_run(tmp_path: Path) -> None:
    """Every section and plot is drawn from rows shaped like a run's; nothing here is measured."""
    cost = {"service": 1.0, "postgres": 0.5, "generator": 0.1, "pooler": 0.0}
    measured = {"p50_ms": 10.0, "p90_ms": 20.0, "p99_ms": 25.0, "max_ms": 30.0}
    extra = {"cpu_ms": cost, **measured, "service_cores": 1.0, "steal_percent": 0.0}
    extra |= {"statuses": {"200": 100}, "exhausted": False, "avg_ms": 1.0}
    rows: list[dict[str, object]] = []
    for n in (1, 2):
        for c in (1, 8, 32):
            for w in report.WORKERS:
                rows.append(row(n, report.trivial(w), "trivial", 1000, concurrency=c, **extra))
                for scenario in ("plain", "status", "start", "mixed", "running"):
                    rows.append(row(n, report.service(w), scenario, 500, concurrency=c, **extra))
            for statement in ("pg-start", "pg-status"):
                rows.append(row(n, report.PGBENCH, statement, 2000, concurrency=c, **extra))
        for target in (
            *(report.stored(j) for j in (0, 10_000, 100_000)),
            *(report.pooled(w) for w in (1, 2, 4)),
            report.service(4),
            "baseline abc123",
        ):
            for scenario in ("status", "start"):
                rows.append(row(n, target, scenario, 400, **extra))
        for label in ("service", "baseline abc123"):
            rows.append(row(n, report.running(label), "running", 50, **extra))
        rows.append(row(n, report.WRK, "trivial", 1000, cpu_ms=cost, steal_percent=0.0))

    text = report.markdown(rows, report.Settings(2, 2.0, 1.0, "abc123"))
    drawn = plots.draw(rows, tmp_path)

    for section in ("## The targets", "## Scale-out", "## /runningjobs with 2,000 unfinished",
                    "## Before and after", "![growth with stored jobs](growth.png)"):  # fmt: skip
        assert section in text
    assert "| /runningjobs at 2,000 unfinished >= 10x baseline abc123 | 1.0 (1.0-1.0) |" in text
    assert "wrk, in C on epoll, 0.100 (0.100-0.100) ms" in text
    assert [path.name for path in drawn] == ["throughput.png", "scaling.png", "growth.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in drawn)
