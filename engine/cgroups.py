"""One control group per sandbox: its memory (tmpfs, shared memory and memfd pages are charged
to it; no swap), its processes and its CPU are bounded as a whole, and it is killed as a whole
and waited for until empty.

cgroup v2 where the engine's group offers the memory and pids controllers (`memory.max`,
`memory.swap.max`, `pids.max`, `cpu.max`, `cgroup.kill`); else the v1 hierarchies (memory, pids,
cpu, cpuacct, freezer: killed frozen, so no process forks while the others die). Groups are made
beneath the engine's own, so an operator's limit on the engine bounds its jobs too.
`Cgroups.find()` is None where neither can be written (not root, or no such controllers): the
engine says so at start, and each process then has only its rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
FAMILY = "operator-engine"  # the folder beneath the engine's group that holds the sandboxes'
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
CPU_PERIOD_US = 100_000
EMPTY_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Usage:
    """What a group's processes used, as the kernel counted it."""

    cpu_seconds: float
    peak_memory_bytes: int
    oom_killed: bool


@dataclass(frozen=True)
class GroupLimits:
    memory_bytes: int
    processes: int
    cpus: int


class Group:
    """One sandbox's group: in each hierarchy (v1) or one folder (v2)."""

    def __init__(self, folders: dict[str, Path], v2: bool) -> None:
        self.folders = folders  # controller (or "" for v2) -> folder
        self.v2 = v2

    @property
    def procs_files(self) -> list[Path]:
        """Where the sandbox's first process writes its pid to join, before it starts."""
        return [folder / "cgroup.procs" for folder in dict.fromkeys(self.folders.values())]

    def pids(self) -> list[int]:
        folder = self._folder("pids")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in (folder / "cgroup.procs").read_text().split()]
        return []

    def kill(self) -> None:
        """Every process of the group, at once; returns once none is left (or after
        EMPTY_WAIT_SECONDS, when a process could not be reaped: then `remove` fails)."""
        if not self.pids():
            return  # the usual end: the sandbox's first process died, and with it the rest
        if self.v2:
            _write(self._folder("") / "cgroup.kill", "1")
        else:
            with self._frozen():
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + EMPTY_WAIT_SECONDS
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.01)

    def usage(self) -> Usage:
        if self.v2:
            folder = self._folder("")
            stat = _keyed(folder / "cpu.stat")
            events = _keyed(folder / "memory.events")
            peak = _number(folder / "memory.peak")
            return Usage(stat.get("usage_usec", 0) / 1e6, peak, events.get("oom_kill", 0) > 0)
        memory = self._folder("memory")
        return Usage(
            cpu_seconds=_number(self._folder("cpuacct") / "cpuacct.usage") / 1e9,
            peak_memory_bytes=_number(memory / "memory.max_usage_in_bytes"),
            oom_killed=_keyed(memory / "memory.oom_control").get("oom_kill", 0) > 0,
        )

    def remove(self) -> None:
        self.kill()
        for folder in dict.fromkeys(self.folders.values()):
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()

    @contextlib.contextmanager
    def _frozen(self) -> Iterator[None]:
        state = self._folder("freezer") / "freezer.state"
        _write(state, "FROZEN")
        deadline = time.monotonic() + EMPTY_WAIT_SECONDS
        while state.read_text().strip() == "FREEZING" and time.monotonic() < deadline:
            time.sleep(0.001)
        try:
            yield
        finally:
            _write(state, "THAWED")  # killed processes die only once thawed

    def _folder(self, controller: str) -> Path:
        return self.folders["" if self.v2 else controller]


class Cgroups:
    """Where the engine makes its sandboxes' groups."""

    def __init__(self, bases: dict[str, Path], v2: bool) -> None:
        self.bases = bases
        self.v2 = v2

    @classmethod
    def find(cls) -> Cgroups | None:
        if os.geteuid() != 0:
            return None
        mine = _own_groups()
        mounts = _mounts()
        unified = mounts.get("")
        if unified is not None and "" in mine:
            base = unified / mine[""].lstrip("/")
            offered = _read(base / "cgroup.controllers").split()
            if {"memory", "pids"} <= set(offered):
                found = cls({"": base / FAMILY}, v2=True)
                return found if found._prepare(offered) else None
        bases = {}
        for controller in V1_CONTROLLERS:
            if controller not in mounts or controller not in mine:
                return None
            bases[controller] = mounts[controller] / mine[controller].lstrip("/") / FAMILY
        found = cls(bases, v2=False)
        return found if found._prepare([]) else None

    def describe(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1"

    def create(self, name: str, limits: GroupLimits) -> Group:
        folders = {controller: base / name for controller, base in self.bases.items()}
        for folder in dict.fromkeys(folders.values()):
            folder.mkdir(exist_ok=True)
        group = Group(folders, self.v2)
        try:
            self._limit(group, limits)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, group: Group, limits: GroupLimits) -> None:
        quota = f"{limits.cpus * CPU_PERIOD_US} {CPU_PERIOD_US}"
        if self.v2:
            folder = group.folders[""]
            _write(folder / "memory.max", str(limits.memory_bytes))
            _write(folder / "memory.swap.max", "0", missing_ok=True)
            _write(folder / "pids.max", str(limits.processes))
            _write(folder / "cpu.max", quota, missing_ok=True)
            return
        memory = group.folders["memory"]
        _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        # Memory and swap together: no swap (absent where swap accounting is off).
        _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes), missing_ok=True)
        _write(group.folders["pids"] / "pids.max", str(limits.processes))
        cpu = group.folders["cpu"]
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(limits.cpus * CPU_PERIOD_US))

    def _prepare(self, offered: list[str]) -> bool:
        """Make the family's folders; on v2 hand it the controllers its groups need."""
        try:
            for base in self.bases.values():
                base.mkdir(exist_ok=True)
            if self.v2:
                # A v2 group with processes cannot hand controllers down ("no internal
                # processes"): the engine moves itself into a leaf beside its sandboxes first.
                own = self.bases[""].parent
                leaf = own / "engine"
                leaf.mkdir(exist_ok=True)
                _write(leaf / "cgroup.procs", str(os.getpid()))
                wanted = [c for c in ("memory", "pids", "cpu") if c in offered]
                enable = " ".join(f"+{c}" for c in wanted)
                _write(own / "cgroup.subtree_control", enable)
                _write(self.bases[""] / "cgroup.subtree_control", enable)
        except OSError:
            return False
        return True


def _own_groups() -> dict[str, str]:
    """The engine's own group in each hierarchy: controller (or "" for v2) -> path."""
    groups = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _mounts() -> dict[str, Path]:
    """Where each hierarchy is mounted: controller (or "" for v2) -> mount point."""
    found: dict[str, Path] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        before, _, after = line.partition(" - ")
        kind, _, options = after.split(" ", 2)
        point = Path(before.split(" ")[4])
        if kind == "cgroup2":
            found.setdefault("", point)
        elif kind == "cgroup":
            for option in options.split(","):
                if option in V1_CONTROLLERS:
                    found.setdefault(option, point)
    return found


def _write(path: Path, value: str, *, missing_ok: bool = False) -> None:
    try:
        path.write_text(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _number(path: Path) -> int:
    text = _read(path).strip()
    return int(text) if text.isdecimal() else 0


def _keyed(path: Path) -> dict[str, int]:
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdecimal():
            values[key] = int(value)
    return values
