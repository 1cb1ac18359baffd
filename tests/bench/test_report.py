"""The benchmark's arithmetic: ratios are taken within a round, CPU is counted over a process
tree, the children it has reaped included. No speed is asserted here (bench/RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from bench import cpu, report


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
