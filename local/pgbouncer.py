"""PgBouncer in transaction pooling mode in front of a PostgreSQL, for the tests and the
benchmark: Debian's package, on a free loopback port, run as `user` (PgBouncer refuses root;
the server's own user can reach its Unix socket).

    with pgbouncer.running(folder, server="/socket/dir", server_port=5432, user="postgres") as b:
        env = b.env()   # POSTGRES_* that point the service through it
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local.ports import free_port

BINARY = "/usr/sbin/pgbouncer"


@dataclass(frozen=True)
class Bouncer:
    port: int
    pid: int

    def env(self) -> dict[str, str]:
        """The POSTGRES_* variables that send the service through it."""
        return {
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_SSLMODE": "disable",
            "POSTGRES_POOLER": "transaction",
        }


def available() -> bool:
    return Path(BINARY).exists()


@contextmanager
def running(
    folder: Path,
    *,
    server: str,
    server_port: int,
    user: str | None,
    pool_size: int = 8,
    round_robin: bool = False,
) -> Iterator[Bouncer]:
    """PgBouncer for every database of `server` (a host, or a socket folder), its config and
    log in `folder`; stopped at the end. `round_robin` hands each transaction to the next
    server connection in turn, instead of the one used last."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = host={server} port={server_port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
server_round_robin = {int(round_robin)}
default_pool_size = {pool_size}
max_client_conn = 1000
logfile = {folder / "pgbouncer.log"}
"""
    )
    if user:
        for path in (folder, config):
            shutil.chown(path, user)
    process = subprocess.Popen([BINARY, "-q", str(config)], user=user)
    try:
        _wait_for_port(port, process)
        yield Bouncer(port, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = "see its pgbouncer.log"
                raise RuntimeError(f"PgBouncer did not come up ({log})") from None
            time.sleep(0.05)
