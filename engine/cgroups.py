"""One control group per sandbox: its memory (tmpfs, shared memory and memfd pages are charged
to it; no swap), its processes and its CPU are bounded as a whole, and it is killed as a whole
and waited for until empty.

cgroup v2 where the engine's group offers the memory and pids controllers (`memory.max`,
`memory.swap.max`, `pids.max`, `cpu.max`, `cgroup.kill`); else the v1 hierarchies (memory, pids,
cpu, cpuacct, freezer: killed frozen, so no process forks while the others die). Groups are made
beneath the engine's own, so an operator's limit on the engine bounds its jobs too.
`Cgroups.find()` is None where neither can be written (not root, or no such controllers): the
engine says so at start, and each process then has only its rlimits.

A podman container's group is made by podman beneath a parent the engine names
(`--cgroup-parent`): one path from every hierarchy's root. Where the engine's own groups differ
between v1 hierarchies, such parents are made from the roots instead (`create(uniform=True)`).
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
    oom_killed: bool  # the kernel killed one of its processes for memory, as it counts it here
    # It reached its memory limit (v1: its peak is the limit). With a container, whose OOM kill v1
    # counts in podman's group beneath and gone by the end, a SIGKILL after it says the same.
    limit_reached: bool = False


@dataclass(frozen=True)
class GroupLimits:
    memory_bytes: int
    processes: int
    cpus: int


class Group:
    """One sandbox's group: in each hierarchy (v1) or one folder (v2)."""

    def __init__(self, folders: dict[str, Path], v2: bool, relative: str | None = None) -> None:
        self.folders = folders  # controller (or "" for v2) -> folder
        self.v2 = v2
        self.relative = relative  # its path from every hierarchy's root, where it is one

    @property
    def procs_files(self) -> list[Path]:
        """Where the sandbox's first process writes its pid to join, before it starts."""
        return [folder / "cgroup.procs" for folder in dict.fromkeys(self.folders.values())]

    def pids(self) -> list[int]:
        """Its processes, those of the groups beneath it included (a container's)."""
        found = []
        for inner, _, _ in os.walk(self._folder("pids")):
            with contextlib.suppress(OSError):
                found += [int(pid) for pid in (Path(inner) / "cgroup.procs").read_text().split()]
        return found

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
            # memory.events counts the whole subtree's: a container's groups beneath included.
            oom = events.get("oom_kill", 0) > 0
            return Usage(stat.get("usage_usec", 0) / 1e6, peak, oom, events.get("max", 0) > 0)
        memory = self._folder("memory")
        peak = _number(memory / "memory.max_usage_in_bytes")
        return Usage(
            cpu_seconds=_number(self._folder("cpuacct") / "cpuacct.usage") / 1e9,
            peak_memory_bytes=peak,
            oom_killed=_keyed(memory / "memory.oom_control").get("oom_kill", 0) > 0,
            limit_reached=peak >= _number(memory / "memory.limit_in_bytes"),
        )

    def remove(self) -> None:
        self.kill()
        for folder in dict.fromkeys(self.folders.values()):
            # Deepest first: the groups a container runtime made beneath it (all empty now).
            for inner, _, _ in sorted(os.walk(folder), key=lambda w: -len(Path(w[0]).parts)):
                with contextlib.suppress(FileNotFoundError):
                    Path(inner).rmdir()

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

    def __init__(
        self, bases: dict[str, Path], v2: bool, roots: dict[str, Path] | None = None
    ) -> None:
        self.bases = bases
        self.v2 = v2
        self.roots = roots or {}  # each hierarchy's mount point

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
                found = cls({"": base / FAMILY}, v2=True, roots={"": unified})
                return found if found._prepare(offered) else None
        bases = {}
        for controller in V1_CONTROLLERS:
            if controller not in mounts or controller not in mine:
                return None
            bases[controller] = mounts[controller] / mine[controller].lstrip("/") / FAMILY
        found = cls(bases, v2=False, roots={c: mounts[c] for c in V1_CONTROLLERS})
        return found if found._prepare([]) else None

    def describe(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1"

    def create(self, name: str, limits: GroupLimits, *, uniform: bool = False) -> Group:
        """A group beneath the engine's; `uniform`: at one path from every hierarchy's root,
        as a container runtime's parent group must be (`Group.relative`)."""
        bases = self._uniform_bases() if uniform else self.bases
        folders = {controller: base / name for controller, base in bases.items()}
        for folder in dict.fromkeys(folders.values()):
            folder.mkdir(parents=True, exist_ok=True)
        relatives = {
            "/" + str(folder.relative_to(self.roots[controller]))
            for controller, folder in folders.items()
        }
        group = Group(folders, self.v2, relatives.pop() if len(relatives) == 1 else None)
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

    def remove_job(self, job_id: str) -> None:
        """Every group of the job's sandboxes (named `<jobId>-…`), its processes killed."""
        uniform = self._uniform_bases()
        for bases in (self.bases,) if uniform == self.bases else (self.bases, uniform):
            names = {
                folder.name
                for base in bases.values()
                for folder in (base.iterdir() if base.is_dir() else [])
                if folder.name.startswith(f"{job_id}-") and folder.is_dir()
            }
            for name in names:
                with contextlib.suppress(OSError):
                    Group({c: base / name for c, base in bases.items()}, self.v2).remove()

    def _uniform_bases(self) -> dict[str, Path]:
        """The family's folders where they share one path from the roots; else the family
        beneath each root (outside the engine's own groups, which differ)."""
        relatives = {str(base.relative_to(self.roots[c])) for c, base in self.bases.items()}
        if len(relatives) == 1:
            return self.bases
        return {controller: root / FAMILY for controller, root in self.roots.items()}

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
