"""What the local run starts is gone when the run ends, however it ends.

PostgreSQL daemonizes (pg_ctl), and atexit handlers never run in a process killed by SIGKILL:
a run that stopped its servers itself would leave them behind then. So the run hands each to a
reaper, a process in a session of its own that reads its orders on a pipe only the run writes
to. When the run ends, exiting or killed, the pipe closes and the reaper stops everything at
once: each process gets SIGTERM and its grace, then SIGKILL; PostgreSQL goes last (the engine
hands its jobs back there first). One path for both endings, so a plain stop is as quick.

    python -m local.reaper      (started by `Reaper.start`; orders are JSON lines on stdin)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PG_CTL_SECONDS = 10


@dataclass
class Reaper:
    """The run's side: orders sent while it runs; `finish` at its exit."""

    process: subprocess.Popen[bytes]
    owner: int  # the run's pid: its forked workers inherit the pipe and must not finish it

    @classmethod
    def start(cls) -> Reaper:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the terminal's group must not end it first
        )
        return cls(process, os.getpid())

    def process_ends(self, pid: int, *, grace: float) -> None:
        """Stop `pid` (SIGTERM, then SIGKILL after `grace` seconds) when the run ends."""
        self._order({"pid": pid, "started": _start_time(pid), "grace": grace})

    def postgres_stops(self, pg_ctl: Path, data_dir: Path, user: str | None) -> None:
        """Stop the PostgreSQL server of `data_dir` (pg_ctl run as `user`) when the run ends."""
        self._order({"pg_ctl": str(pg_ctl), "data": str(data_dir), "user": user})

    def detach(self) -> None:
        """In a forked child of the run (a server worker): let go of the pipe, so that only
        the run's own end closes it."""
        if os.getpid() != self.owner and self.process.stdin is not None:
            self.process.stdin.close()

    def finish(self, timeout: float = 30) -> None:
        """The run ends: everything is stopped before this returns."""
        if os.getpid() != self.owner or self.process.stdin is None:
            return
        self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            print("operator-service: still stopping what the run started", file=sys.stderr)

    def _order(self, order: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(order).encode() + b"\n")
        self.process.stdin.flush()


def reap(orders: IO[bytes]) -> None:
    """The reaper's side: read orders until the run's end closes the pipe, then act on them."""
    processes: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    for line in orders:
        order = json.loads(line)
        (processes if "pid" in order else servers).append(order)
    _end_processes(processes)
    for server in servers:
        _stop_postgres(server["pg_ctl"], server["data"], server["user"])


def _end_processes(orders: list[dict[str, Any]]) -> None:
    """SIGTERM to each that is still the process it was, then SIGKILL to any that outlive
    their grace; returns once all are gone."""
    began = time.monotonic()
    alive = {o["pid"]: o["grace"] for o in orders if _start_time(o["pid"]) == o["started"]}
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    while alive:
        time.sleep(0.05)
        for pid, grace in list(alive.items()):
            if not _running(pid):
                del alive[pid]
            elif time.monotonic() - began > grace:
                _signal(pid, signal.SIGKILL)


def _stop_postgres(pg_ctl: str, data_dir: str, user: str | None) -> None:
    for mode in ("fast", "immediate"):  # immediate: what a crash does, recovered at next start
        try:
            subprocess.run(
                [pg_ctl, "-D", data_dir, "-w", "-m", mode, "stop"],
                user=user,
                capture_output=True,
                timeout=PG_CTL_SECONDS,
                check=True,
            )
            return
        except subprocess.CalledProcessError:
            return  # not running (any more)
        except subprocess.TimeoutExpired:
            continue


def _start_time(pid: int) -> str | None:
    """When `pid` started (/proc/<pid>/stat's 22nd field): a pid reused since is another."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _running(pid: int) -> bool:
    """Alive and not a zombie (the run, its parent, may not have reaped it yet)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command's name (which may hold spaces and
    parentheses), from the state on; empty when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rsplit(")", 1)[1].split()


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reap(sys.stdin.buffer)
