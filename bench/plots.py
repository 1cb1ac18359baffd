"""The plots of bench/RESULTS.md, drawn from the rows of the same run (matplotlib, PNG): requests/s
against concurrency for each scenario and target, the scale-out over worker processes, and the
growth with stored jobs. Each point is the median over the rounds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.report import (
    WORKERS,
    Row,
    Rows,
    pooled,
    rps,
    service,
    stored,
    trivial,
)

CONCURRENCY = (1, 8, 32)
SCENARIOS = ("plain", "status", "start", "mixed", "running")
FILES = ("throughput.png", "scaling.png", "growth.png")


def draw(rows: list[Row], folder: Path) -> list[Path]:
    data = Rows(rows)
    paths = [folder / name for name in FILES]
    _throughput(data, paths[0])
    _scaling(data, paths[1])
    _growth(data, paths[2])
    return paths


def _median(data: Rows, target: str, scenario: str, c: int) -> float:
    return data.spread(target, scenario, c, rps).median


def _throughput(data: Rows, path: Path) -> None:
    figure, axes = plt.subplots(1, len(SCENARIOS), figsize=(4 * len(SCENARIOS), 3.6), sharey=True)
    for axis, scenario in zip(axes, SCENARIOS, strict=True):
        for workers in WORKERS:
            _line(axis, data, service(workers), scenario, "o-")
            _line(axis, data, trivial(workers), "trivial", "s--")
        axis.set_title(scenario)
        axis.set_xlabel("concurrency")
        axis.set_xscale("log", base=2)
        axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("requests/s (median over rounds)")
    axes[-1].legend(fontsize="small", loc="upper left")
    _save(figure, path)


def _line(axis: Axes, data: Rows, target: str, scenario: str, style: str) -> None:
    points = [(c, _median(data, target, scenario, c)) for c in CONCURRENCY]
    points = [(c, v) for c, v in points if v == v]  # NaN: not measured
    if points:
        axis.plot(*zip(*points, strict=True), style, label=target)


def _scaling(data: Rows, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for axis, scenario in zip(axes, ("status", "start"), strict=True):
        for name, label in (("directly", service), ("through PgBouncer", pooled)):
            _series(axis, data, [(w, label(w)) for w in (1, 2, 4)], scenario, name)
        axis.set_title(f"{scenario}, conc. 32")
        axis.set_xlabel("worker processes")
        axis.set_xticks((1, 2, 4))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("requests/s")
    axes[-1].legend(fontsize="small")
    _save(figure, path)


def _growth(data: Rows, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for scenario in ("status", "start"):
        points = [(n, stored(n)) for n in (0, 10_000, 100_000)]
        _series(axis, data, points, scenario, scenario)
    axis.set_title("growth with stored jobs, conc. 32")
    axis.set_xlabel("jobs stored (half unfinished)")
    axis.set_xscale("symlog", linthresh=10_000)
    axis.set_ylim(bottom=0)
    axis.set_ylabel("requests/s")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(figure, path)


def _series(
    axis: Axes, data: Rows, points: Sequence[tuple[int, str]], scenario: str, name: str
) -> None:
    measured = [(x, _median(data, target, scenario, 32)) for x, target in points]
    measured = [(x, v) for x, v in measured if v == v]
    if measured:
        axis.plot(*zip(*measured, strict=True), "o-", label=name)


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
