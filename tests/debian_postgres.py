"""A PostgreSQL of a test's own from Debian's package, on a free loopback TCP port: for what the
embedded one cannot do (it is built without TLS, and listens on a Unix socket in a folder only
root may enter, where PgBouncer, which refuses to run as root, cannot reach it).

Run as Debian's `postgres` user when the tests run as root (PostgreSQL refuses root too). A
missing package skips the tier, or fails it when the variable CI sets says it is required."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.ports import free_port


def require(command: str, *, package: str, tier: str) -> Path:
    """The first of `command`'s paths that exists (a glob), or the tier skipped or failed."""
    found = sorted(Path("/").glob(command.lstrip("/")))
    if found:
        return found[-1]
    why = f"Debian's {package} is not installed (apt-get install {package})"
    if os.environ.get(tier) == "1":
        pytest.fail(f"{tier} is set but {why}", pytrace=False)
    pytest.skip(why)


@dataclass(frozen=True)
class Server:
    folder: Path  # owned by `user`: the data folder and whatever else the test puts there
    binaries: Path
    user: str | None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def run(self, *argv: str) -> None:
        subprocess.run(argv, user=self.user, check=True, capture_output=True, timeout=60)

    def give(self, path: Path) -> None:
        """Hand a file the test wrote to the server's user."""
        if self.user:
            owner = pwd.getpwnam(self.user)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def copy_in(self, source: Path, name: str) -> Path:
        target = self.data / name
        shutil.copy(source, target)
        self.give(target)
        return target

    @contextmanager
    def serving(self, options: str = "") -> Iterator[int]:
        """Started with `options` (postgres -c ...), on a free port; stopped at the end."""
        port = free_port()
        pg_ctl = str(self.binaries / "pg_ctl")
        argv = f"-h 127.0.0.1 -p {port} -k {self.data} {options}"
        log = str(self.folder / "log")
        self.run(pg_ctl, "-w", "-D", str(self.data), "-o", argv, "-l", log, "start")
        try:
            yield port
        finally:
            self.run(pg_ctl, "-w", "-D", str(self.data), "-m", "immediate", "stop")


def initdb(folder: Path, *, tier: str) -> Server:
    """A fresh cluster in folder/data, its superuser `postgres`, trusted on loopback."""
    binaries = require("/usr/lib/postgresql/*/bin/initdb", package="postgresql", tier=tier).parent
    user = "postgres" if os.geteuid() == 0 else None
    server = Server(folder=folder, binaries=binaries, user=user)
    if user:
        server.give(folder)
        for parent in folder.parents:  # pytest's folders are the owner's only
            parent.chmod(parent.stat().st_mode | 0o011)
    server.run(str(binaries / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(server.data))
    return server
