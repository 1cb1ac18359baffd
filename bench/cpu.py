"""Where a run's CPU went: the service's process tree, PostgreSQL's, and the load generator.

Throughput on a shared 2-core machine moves by a quarter from one run to the next; CPU time per
request moves less while the host is quiet, and the steal beside it says when it was not. Read
from /proc (Linux).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses


class Processes:
    """One reading of /proc: every process's CPU fields and who its children are."""

    def __init__(self) -> None:
        self.stats: dict[int, list[str]] = {}
        self.children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (fields := _stat(int(entry))) is not None:
                self.stats[int(entry)] = fields
                self.children.setdefault(int(fields[1]), []).append(int(entry))

    def tree_seconds(self, root: int) -> float:
        """CPU seconds of `root` and its descendants, the exited ones included: a process's
        own time, plus the time of the children it has reaped (cutime, cstime)."""
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            if (fields := self.stats.get(pid)) is not None:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
                todo += self.children.get(pid, [])
        return total * TICK


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class Sample:
    service: float
    postgres: float
    generator: float  # this process, pgbench included once it has been waited for
    pooler: float  # the PgBouncer a target goes through, if any
    stolen: tuple[int, int]  # ticks the hypervisor gave to other machines, and all ticks


def _stolen() -> tuple[int, int]:
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[7], sum(ticks)


class Meter:
    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    def sample(self, service: int | None, pooler: int | None = None) -> Sample:
        mine, processes = os.times(), Processes()
        return Sample(
            service=processes.tree_seconds(service) if service else 0.0,
            postgres=processes.tree_seconds(self.postmaster),
            generator=mine.user + mine.system + mine.children_user + mine.children_system,
            pooler=processes.tree_seconds(pooler) if pooler else 0.0,
            stolen=_stolen(),
        )


def steal_percent(before: Sample, after: Sample) -> float:
    """How much of the machine's CPU the hypervisor handed to other guests in between: on a
    shared host, the part of a slow run that is not ours."""
    stolen, total = (a - b for a, b in zip(after.stolen, before.stolen, strict=True))
    return round(100 * stolen / max(total, 1), 1)


def per_request_ms(before: Sample, after: Sample, requests: int) -> dict[str, float]:
    """CPU milliseconds per request of each part between two samples."""
    n = max(requests, 1)
    return {
        part: round((getattr(after, part) - getattr(before, part)) / n * 1000, 3)
        for part in ("service", "postgres", "generator", "pooler")
    }
